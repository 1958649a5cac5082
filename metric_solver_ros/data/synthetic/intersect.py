"""Rays against solids, culled by screen tiles: the nearest box hit and sun shadows.

Boxes are tested against camera rays only where their screen-space bounding box (near-clipped at
``NEAR_M``) overlaps 16x16 pixel tiles, so the cost follows the screen area the boxes cover, not
their number. Sun shadows are cast by boxes (rays from visible points towards the sun, culled the
same way with the screen bounding box of each box's shadow volume down to the floor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from metric_solver_ros.data.synthetic.packing import _B_FIELDS, PackedScenes
from metric_solver_ros.data.synthetic.scene import SHAPES

TILE_PX = 16
"""Side of the square screen tiles used to cull boxes [px]."""

NEAR_M = 0.05
"""Near clipping depth for box culling [m]; generated scenes keep boxes farther than 0.2 m."""

_MAX_PAIR_ELEMS = 1 << 21  # pixels tested per chunk of (box, tile) pairs
_INF_BITS = 0x7F800000


def _screen_bbox(pts: torch.Tensor, pk: PackedScenes) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel bounding box of the convex hull of world points, clipped at z = NEAR_M.

    Args:
        pts: [B, N, Q, 3] world points (hull vertices) [m].
        pk: Packed scene (camera).

    Returns:
        ([B, N, 4] umin, umax, vmin, vmax [px], [B, N] visible).
    """
    rel = pts - pk.origin[:, None, None, :]
    cam = torch.einsum('bnqi,bij->bnqj', rel, pk.rot)  # R^T (p - o)
    z = cam[..., 2]
    q = pts.shape[2]
    ia, ib = torch.triu_indices(q, q, 1, device=pts.device)
    pa, pb = cam[:, :, ia], cam[:, :, ib]
    za, zb = pa[..., 2], pb[..., 2]
    cross = (za - NEAR_M) * (zb - NEAR_M) < 0
    s = ((NEAR_M - za) / torch.where(cross, zb - za, torch.ones_like(za))).clamp(0, 1)
    clip = pa + s[..., None] * (pb - pa)
    allp = torch.cat((cam, clip), 2)
    ok = torch.cat((z >= NEAR_M, cross), 2)
    zc = allp[..., 2].clamp_min(NEAR_M)
    fx, fy, cx, cy = (pk.k[:, i, None, None] for i in range(4))
    u = (fx * allp[..., 0] / zc + cx).clamp(-1e6, 1e6)
    v = (fy * allp[..., 1] / zc + cy).clamp(-1e6, 1e6)
    big = torch.full_like(u, 1e7)
    box = torch.stack(
        (
            torch.where(ok, u, big).amin(2),
            torch.where(ok, u, -big).amax(2),
            torch.where(ok, v, big).amin(2),
            torch.where(ok, v, -big).amax(2),
        ),
        -1,
    )
    return box, ok.any(2)


def _box_corners(boxes: torch.Tensor) -> torch.Tensor:
    """[B, N, 9] box params -> [B, N, 8, 3] world corners (of the bounding box)."""
    signs = torch.tensor(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
        dtype=boxes.dtype,
        device=boxes.device,
    )
    local = signs * boxes[..., None, 3:6]  # [B, N, 8, 3]
    c, s = torch.cos(boxes[..., 6:7]), torch.sin(boxes[..., 6:7])
    wx = c * local[..., 0] + s * local[..., 2]
    wz = -s * local[..., 0] + c * local[..., 2]
    return torch.stack((wx, local[..., 1], wz), -1) + boxes[..., None, 0:3]


def _tile_pairs(bbox: torch.Tensor, visible: torch.Tensor, ty: int, tx: int) -> torch.Tensor:
    """(frame, box, tile_y, tile_x) of every tile a screen bounding box touches: [K, 4]."""
    dev = bbox.device
    edge_y = torch.arange(ty, device=dev, dtype=bbox.dtype) * TILE_PX
    edge_x = torch.arange(tx, device=dev, dtype=bbox.dtype) * TILE_PX
    margin = 1.0
    oy = (bbox[..., 3:4] >= edge_y - margin) & (bbox[..., 2:3] <= edge_y + TILE_PX - 1 + margin)
    ox = (bbox[..., 1:2] >= edge_x - margin) & (bbox[..., 0:1] <= edge_x + TILE_PX - 1 + margin)
    both = oy[..., :, None] & ox[..., None, :] & visible[..., None, None]
    return both.nonzero()


def _rotate_y(x: torch.Tensor, z: torch.Tensor, c: torch.Tensor, s: torch.Tensor):
    """World (x, z) -> box-local (x, z) for a box with yaw (cos c, sin s)."""
    return c * x - s * z, s * x + c * z


def _interval(
    shape: int, o: Sequence[torch.Tensor], d: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray interval inside a unit shape in its scaled local frame.

    The shape is the unit cube [-1, 1]^3 (box), the unit vertical cylinder x^2 + z^2 <= 1,
    |y| <= 1 (cylinder) or the unit ball (ellipsoid); scaling a box's local frame by its half
    sizes maps it there without changing the ray parameter t.

    Args:
        shape: ``SHAPES`` index.
        o: (x, y, z) ray origins (scaled local frame).
        d: (x, y, z) ray directions (scaled local frame).

    Returns:
        (t_near, t_far, valid): the ray is inside for t in [t_near, t_far] where valid.
    """
    if shape == 1 or shape == 2:
        # stable form: distance of the closest approach m = o + t_mid d, then
        # t = t_mid -+ sqrt((1 - |m|^2) / |d|^2) (no cancellation in b^2 - ac)
        if shape == 2:
            a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
            t_mid = -(o[0] * d[0] + o[1] * d[1] + o[2] * d[2]) / a
            mx, my, mz = o[0] + t_mid * d[0], o[1] + t_mid * d[1], o[2] + t_mid * d[2]
            rest = 1.0 - (mx * mx + my * my + mz * mz)
        else:
            a = (d[0] * d[0] + d[2] * d[2]).clamp_min(1e-20)
            t_mid = -(o[0] * d[0] + o[2] * d[2]) / a
            mx, mz = o[0] + t_mid * d[0], o[2] + t_mid * d[2]
            rest = 1.0 - (mx * mx + mz * mz)
        root = (rest.clamp_min(0.0) / a).sqrt()
        t_near = t_mid - root
        t_far = t_mid + root
        valid = rest >= 0
        if shape == 2:
            return t_near, t_far, valid
        inv = (1.0 / d[1]).clamp(-1e30, 1e30)  # finite: 0 * inv stays 0 (no NaN)
        t1, t2 = (-1.0 - o[1]) * inv, (1.0 - o[1]) * inv
        t_near = torch.maximum(t_near, torch.minimum(t1, t2))
        t_far = torch.minimum(t_far, torch.maximum(t1, t2))
        return t_near, t_far, valid & (t_near <= t_far)
    nears, fars = [], []
    for oa, da in zip(o, d, strict=True):
        inv = (1.0 / da).clamp(-1e30, 1e30)
        t1, t2 = (-1.0 - oa) * inv, (1.0 - oa) * inv
        nears.append(torch.minimum(t1, t2))
        fars.append(torch.maximum(t1, t2))
    t_near = torch.maximum(torch.maximum(nears[0], nears[1]), nears[2])
    t_far = torch.minimum(torch.minimum(fars[0], fars[1]), fars[2])
    return t_near, t_far, t_near <= t_far


def _to_local(
    bx: torch.Tensor, o: Sequence[torch.Tensor], d: Sequence[torch.Tensor]
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """World ray (origin relative to nothing, direction) -> a box's scaled local frame.

    Args:
        bx: [K, 9] box parameters.
        o: (x, y, z) world origins, each [K, 1] or [K, T].
        d: (x, y, z) world directions, each [K, 1] or [K, T].

    Returns:
        ((ox, oy, oz), (dx, dy, dz)) in the frame where the shape is the unit shape.
    """
    c, s = torch.cos(bx[:, 6:7]), torch.sin(bx[:, 6:7])
    ihx, ihy, ihz = 1.0 / bx[:, 3:4], 1.0 / bx[:, 4:5], 1.0 / bx[:, 5:6]
    ox, oz = _rotate_y(o[0] - bx[:, 0:1], o[2] - bx[:, 2:3], c, s)
    dx, dz = _rotate_y(d[0], d[2], c, s)
    return (ox * ihx, (o[1] - bx[:, 1:2]) * ihy, oz * ihz), (dx * ihx, d[1] * ihy, dz * ihz)


def _shape_pairs(pk: PackedScenes, pairs: torch.Tensor):
    """Split (frame, box, tile_y, tile_x) pairs by shape, in chunks: (shape, chunk) items."""
    n_box = pk.boxes.shape[1]
    shape_of = pk.boxes[..., 8].long()[pairs[:, 0], pairs[:, 1]]
    step = max(1, _MAX_PAIR_ELEMS // (TILE_PX * TILE_PX))
    for shape in range(len(SHAPES)):
        sel = pairs[shape_of == shape]
        for start in range(0, sel.shape[0], step):
            yield shape, sel[start : start + step], n_box


def _cast_boxes(pk: PackedScenes, rays: Sequence[torch.Tensor], ty: int, tx: int) -> torch.Tensor:
    """Nearest box hit per pixel as an int64 key (float32 bits of t << 16 | box index).

    Args:
        pk: Packed scene.
        rays: (dx, dy, dz) world ray directions, each [B * ty * tx, TILE_PX**2] in tile order.
        ty: Tiles vertically.
        tx: Tiles horizontally.

    Returns:
        [B * ty * tx, TILE_PX**2] int64 keys; no hit = (inf bits << 16) | 0xFFFF.
    """
    nb, n_box = pk.boxes.shape[:2]
    dev = pk.boxes.device
    tt = TILE_PX * TILE_PX
    keys = torch.full((nb * ty * tx, tt), (_INF_BITS << 16) | 0xFFFF, dtype=torch.long, device=dev)
    bbox, visible = _screen_bbox(_box_corners(pk.boxes), pk)
    pairs = _tile_pairs(bbox, visible & pk.box_valid, ty, tx)
    flat = pk.boxes.reshape(nb * n_box, _B_FIELDS)
    for shape, chunk, _ in _shape_pairs(pk, pairs):
        f, n, y, x = chunk.unbind(1)
        g = (f * ty + y) * tx + x
        bx = flat[f * n_box + n]
        org = pk.origin[f]
        o, d = _to_local(
            bx, (org[:, 0:1], org[:, 1:2], org[:, 2:3]), (rays[0][g], rays[1][g], rays[2][g])
        )
        t_near, _, valid = _interval(shape, o, d)
        hit = valid & (t_near > 0)
        t = torch.where(hit, t_near, torch.full_like(t_near, math.inf))
        key = (t.view(torch.int32).long() << 16) | n[:, None]
        keys.scatter_reduce_(0, g[:, None].expand_as(key), key, reduce='amin')
    return keys


def _cast_shadows(
    pk: PackedScenes,
    points: Sequence[torch.Tensor],
    normals: Sequence[torch.Tensor],
    ty: int,
    tx: int,
) -> torch.Tensor:
    """Sun shadow per pixel: 1 where a box blocks the ray towards the sun.

    Args:
        pk: Packed scene.
        points: (x, y, z) world hit points, each [B * ty * tx, TILE_PX**2]; non-finite = none.
        normals: (x, y, z) surface normals, same shape.
        ty: Tiles vertically.
        tx: Tiles horizontally.

    Returns:
        [B * ty * tx, TILE_PX**2] float, 1 = shadowed.
    """
    nb, n_box = pk.boxes.shape[:2]
    tt = TILE_PX * TILE_PX
    shadow = torch.zeros((nb * ty * tx, tt), device=pk.boxes.device)
    sun = pk.light['sun_dir']  # [B, 3]
    on = (pk.light['shadows'] > 0) & (sun[:, 1] > 0.05)
    if not bool(on.any()):
        return shadow
    corners = _box_corners(pk.boxes)  # [B, N, 8, 3]
    drop = (corners[..., 1:2] - pk.floor_y[:, None, None, None]).clamp_min(0)
    swept = corners - sun[:, None, None, :] * drop / sun[:, None, None, 1:2].clamp_min(0.05)
    bbox, visible = _screen_bbox(torch.cat((corners, swept), 2), pk)
    pairs = _tile_pairs(bbox, visible & pk.box_valid & on[:, None], ty, tx)
    flat = pk.boxes.reshape(nb * n_box, _B_FIELDS)
    eps = 2e-3
    for shape, chunk, _ in _shape_pairs(pk, pairs):
        f, n, y, x = chunk.unbind(1)
        g = (f * ty + y) * tx + x
        bx = flat[f * n_box + n]
        o = tuple(points[i][g] + eps * normals[i][g] for i in range(3))
        lsun = sun[f]
        o, d = _to_local(bx, o, (lsun[:, 0:1], lsun[:, 1:2], lsun[:, 2:3]))
        _, t_far, valid = _interval(shape, o, d)
        hit = (valid & (t_far > 0)).to(shadow.dtype)
        shadow.scatter_reduce_(0, g[:, None].expand_as(hit), hit, reduce='amax')
    return shadow
