"""The ray caster: scene descriptions to RGB images and exact planar depth, in batches.

Every camera ray is ``R @ ((u - cx) / fx, (v - cy) / fy, 1)``, so the ray parameter of a hit IS
the planar depth z. Sky (no hit) is ``+inf``. Pixels are processed in the order of 16x16 tiles
(``TILE_PX``), the order the culled box tests work in, and put back in rows at the end.

``render_specs`` runs in named stages: geometry (camera rays, the nearest surface, its normal,
texture coordinates and material), shading (textures, lane paint, light with sun shadows, fog,
sky) and the camera (exposure, white balance, vignette, gamma, noise, lens blur).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic.generate import scene_spec
from metric_solver_ros.data.synthetic.intersect import (
    TILE_PX,
    _cast_boxes,
    _cast_shadows,
    _rotate_y,
)
from metric_solver_ros.data.synthetic.packing import (
    _B_FIELDS,
    _M_FIELDS,
    PackedScenes,
    pack_scenes,
)
from metric_solver_ros.data.synthetic.scene import SceneSpec
from metric_solver_ros.data.textures import PATTERN_ID, PATTERNS, TextureAtlas, texture_atlas

# pattern shown on the top / bottom faces of boxes: facades and fitted patterns become plain
_TOP_PATTERN = torch.tensor(
    [
        PATTERN_ID['noise_fine' if name.startswith('facade') else 'plain']
        if name.startswith('facade')
        or name in ('door', 'drawers', 'vehicle_glass', 'window', 'screen')
        else i
        for i, name in enumerate(PATTERNS)
    ]
)


@dataclass
class _Rays:
    """One camera ray per pixel of a batch, in tile order (P = ty * tx * TILE_PX**2 pixels)."""

    ty: int  # tiles vertically
    tx: int  # tiles horizontally
    uu: torch.Tensor  # [P] pixel column [px]
    vv: torch.Tensor  # [P] pixel row [px]
    fx: torch.Tensor  # [B, 1] focal length x [px]
    cx: torch.Tensor  # [B, 1] principal point x [px]
    cy: torch.Tensor  # [B, 1] principal point y [px]
    dx: torch.Tensor  # [B, P] world direction x (camera z component 1: t is planar depth)
    dy: torch.Tensor  # [B, P] world direction y
    dz: torch.Tensor  # [B, P] world direction z
    ox: torch.Tensor  # [B, 1] origin x [m]
    oy: torch.Tensor  # [B, 1] origin y [m]
    oz: torch.Tensor  # [B, 1] origin z [m]
    length: torch.Tensor  # [B, P] |d|
    inf: torch.Tensor  # [B, P] +inf


@dataclass
class _Hits:
    """The nearest surface along each ray ([B, P] each)."""

    t: torch.Tensor  # ray parameter = planar depth [m]; +inf = sky
    finite: torch.Tensor  # something was hit
    tf: torch.Tensor  # t, 0 for sky (keeps the hit point finite)
    is_room: torch.Tensor
    is_ground: torch.Tensor
    is_box: torch.Tensor
    px: torch.Tensor  # hit point x [m]
    py: torch.Tensor  # hit point y [m]
    pz: torch.Tensor  # hit point z [m]
    face: torch.Tensor  # room face index (``Room.materials`` order)
    box_id: torch.Tensor  # box index (0xFFFF: none)


@dataclass
class _BoxSurface:
    """Normal, texture coordinates and material where a ray hits its nearest box ([B, P])."""

    nx: torch.Tensor  # world normal x
    ny: torch.Tensor  # world normal y
    nz: torch.Tensor  # world normal z
    u: torch.Tensor  # texture coordinate u [m]
    v: torch.Tensor  # texture coordinate v [m]
    fit_u: torch.Tensor  # face width [m] (fitted patterns)
    fit_v: torch.Tensor  # face height [m] (fitted patterns)
    mat: torch.Tensor  # material index
    axis: torch.Tensor  # face axis: 0 x, 1 y (top / bottom), 2 z, 3 curved


@dataclass
class _Surface:
    """What shading needs of the surface a ray hits ([B, P] unless noted)."""

    nx: torch.Tensor  # world normal x (up for sky and ground)
    ny: torch.Tensor  # world normal y
    nz: torch.Tensor  # world normal z
    tex_u: torch.Tensor  # pattern coordinate u [tiles]
    tex_v: torch.Tensor  # pattern coordinate v [tiles]
    per_u: torch.Tensor  # pattern period along u [m]
    per_v: torch.Tensor  # pattern period along v [m]
    pattern: torch.Tensor  # pattern index (int64)
    mp: torch.Tensor  # [B, P, 14] packed material row


def _by_tile(x: torch.Tensor) -> torch.Tensor:
    """[B, P] in tile order -> [B * ty * tx, TILE_PX**2] (a view)."""
    return x.reshape(-1, TILE_PX * TILE_PX)


# --- geometry --------------------------------------------------------------------------------


def _camera_rays(pk: PackedScenes, height: int, width: int, dev: torch.device) -> _Rays:
    """Camera rays of every pixel, in tile order ([ty, tx, TILE_PX, TILE_PX] flattened)."""
    tp = TILE_PX
    ty, tx = -(-height // tp), -(-width // tp)
    ar = torch.arange(tp, device=dev)
    vv = torch.arange(ty, device=dev)[:, None, None, None] * tp + ar[None, None, :, None]
    uu = torch.arange(tx, device=dev)[None, :, None, None] * tp + ar[None, None, None, :]
    vv = vv.expand(ty, tx, tp, tp).reshape(-1).float()
    uu = uu.expand(ty, tx, tp, tp).reshape(-1).float()
    fx, fy, cx, cy = (pk.k[:, i : i + 1] for i in range(4))
    a = (uu[None] - cx) / fx  # [B, P]
    bcam = (vv[None] - cy) / fy
    rot = pk.rot
    dx = rot[:, 0, 0:1] * a + rot[:, 0, 1:2] * bcam + rot[:, 0, 2:3]
    dy = rot[:, 1, 0:1] * a + rot[:, 1, 1:2] * bcam + rot[:, 1, 2:3]
    dz = rot[:, 2, 0:1] * a + rot[:, 2, 1:2] * bcam + rot[:, 2, 2:3]
    ox, oy, oz = (pk.origin[:, i : i + 1] for i in range(3))
    return _Rays(
        ty=ty, tx=tx, uu=uu, vv=vv, fx=fx, cx=cx, cy=cy, dx=dx, dy=dy, dz=dz, ox=ox, oy=oy,
        oz=oz, length=torch.sqrt(dx * dx + dy * dy + dz * dz), inf=torch.full_like(dx, math.inf),
    )


def _room_exit(pk: PackedScenes, r: _Rays) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each ray leaves its room box: (t [B, P], +inf without a room; face [B, P] int64)."""
    rm = pk.room
    dx, dy, dz, inf = r.dx, r.dy, r.dz, r.inf
    t_room = inf
    face = torch.zeros_like(dx, dtype=torch.long)
    if bool(pk.has_room.any()):
        # A ray parallel to a pair of faces (d = +-0, e.g. the centre pixel of an unrotated
        # camera) never exits through them: +inf, not the -inf of (lo - o) / +0.
        tx_ = torch.where(dx != 0, (torch.where(dx > 0, rm[:, 1:2], rm[:, 0:1]) - r.ox) / dx, inf)
        ty_ = torch.where(dy != 0, (torch.where(dy > 0, rm[:, 3:4], rm[:, 2:3]) - r.oy) / dy, inf)
        tz_ = torch.where(dz != 0, (torch.where(dz > 0, rm[:, 5:6], rm[:, 4:5]) - r.oz) / dz, inf)
        fx_ = torch.where(dx > 0, 3, 2)
        fy_ = torch.where(dy > 0, 1, 0)
        fz_ = torch.where(dz > 0, 5, 4)
        t_room = torch.where(tx_ < ty_, tx_, ty_)
        face = torch.where(tx_ < ty_, fx_, fy_)
        face = torch.where(tz_ < t_room, fz_, face)
        t_room = torch.where(tz_ < t_room, tz_, t_room)
        t_room = torch.where(pk.has_room[:, None] & (t_room > 0), t_room, inf)
    return t_room, face


def _ground_hit(pk: PackedScenes, r: _Rays) -> torch.Tensor:
    """Ray parameter of the ground plane [B, P] (+inf: no ground, or looking up)."""
    t_ground = r.inf
    if bool(pk.has_ground.any()):
        gy = pk.ground[:, 0:1]
        t_ground = (gy - r.oy) / r.dy
        t_ground = torch.where(pk.has_ground[:, None] & (r.dy < 0) & (r.oy > gy), t_ground, r.inf)
    return t_ground


def _nearest_surface(pk: PackedScenes, r: _Rays) -> _Hits:
    """The nearest of room, ground and boxes along every ray."""
    t_room, face = _room_exit(pk, r)
    t_ground = _ground_hit(pk, r)
    keys = _cast_boxes(pk, (_by_tile(r.dx), _by_tile(r.dy), _by_tile(r.dz)), r.ty, r.tx)
    keys = keys.view(len(pk), r.ty * r.tx * TILE_PX * TILE_PX)
    box_id = keys & 0xFFFF
    t_box = (keys >> 16).to(torch.int32).view(torch.float32)

    # surface: 0 sky, 1 room, 2 ground, 3 box
    t = torch.minimum(torch.minimum(t_room, t_ground), t_box)
    surf = torch.where(t_box <= t, 3, torch.where(t_ground <= t, 2, torch.where(t_room <= t, 1, 0)))
    surf = torch.where(torch.isinf(t), 0, surf)
    finite = surf > 0
    tf = torch.where(finite, t, torch.zeros_like(t))
    return _Hits(
        t=t, finite=finite, tf=tf, is_room=surf == 1, is_ground=surf == 2, is_box=surf == 3,
        px=r.ox + tf * r.dx, py=r.oy + tf * r.dy, pz=r.oz + tf * r.dz, face=face, box_id=box_id,
    )


def _room_surface(
    pk: PackedScenes, h: _Hits, zero: torch.Tensor, one: torch.Tensor
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Room faces: ((nx, ny, nz) inward normal, (u, v) texture coordinates [m], material)."""
    face, px, py, pz = h.face, h.px, h.py, h.pz
    r_nx = torch.where(face == 2, one, torch.where(face == 3, -one, zero))
    r_ny = torch.where(face == 0, one, torch.where(face == 1, -one, zero))
    r_nz = torch.where(face == 4, one, torch.where(face == 5, -one, zero))
    wall_x = (face == 2) | (face == 3)
    wall_z = (face == 4) | (face == 5)
    r_u = torch.where(wall_x, -r_nx * pz, torch.where(wall_z, r_nz * px, px))
    r_v = torch.where(wall_x | wall_z, py - pk.room[:, 2:3], pz)
    r_mat = torch.gather(pk.room_mat, 1, face)
    return (r_nx, r_ny, r_nz), (r_u, r_v), r_mat


def _ground_material(pk: PackedScenes, h: _Hits) -> torch.Tensor:
    """Ground material [B, P]: road, sidewalk or verge by the distance from x = 0."""
    ax = h.px.abs()
    road_hw, side = pk.ground[:, 1:2], pk.ground[:, 2:3]
    g_region = torch.where(ax < road_hw, 0, torch.where(ax < road_hw + side, 1, 2))
    return torch.gather(pk.ground_mat, 1, g_region)


def _box_surface(pk: PackedScenes, h: _Hits, zero: torch.Tensor) -> _BoxSurface:
    """The hit point in the nearest box's frame gives its face, normal and texture coordinates."""
    n_box = pk.boxes.shape[1]
    frame = torch.arange(len(pk), device=pk.boxes.device)[:, None]
    bp = pk.boxes.view(-1, _B_FIELDS)[frame * n_box + h.box_id.clamp_max(n_box - 1)]  # [B, P, 9]
    c, s = torch.cos(bp[..., 6]), torch.sin(bp[..., 6])
    lx, lz = _rotate_y(h.px - bp[..., 0], h.pz - bp[..., 2], c, s)  # local hit point [m]
    ly = h.py - bp[..., 1]
    hx, hy, hz = bp[..., 3], bp[..., 4], bp[..., 5]
    qx, qy, qz = lx / hx, ly / hy, lz / hz  # on the unit shape
    shape = bp[..., 8]
    is_cube, is_cyl = shape == 0, shape == 1
    aqx, aqy, aqz = qx.abs(), qy.abs(), qz.abs()
    radial = torch.sqrt(qx * qx + qz * qz)
    axis = torch.where((aqx >= aqy) & (aqx >= aqz), 0, torch.where(aqy >= aqz, 1, 2))
    axis = torch.where(is_cube, axis, torch.where(is_cyl & (aqy >= radial), 1, 3))  # 3: curved
    sq = torch.sign
    lnx = torch.where(axis == 0, sq(qx), torch.where(axis == 3, qx / hx, zero))
    lny = torch.where(axis == 1, sq(qy), torch.where((axis == 3) & ~is_cyl, qy / hy, zero))
    lnz = torch.where(axis == 2, sq(qz), torch.where(axis == 3, qz / hz, zero))
    inv_len = torch.rsqrt((lnx * lnx + lny * lny + lnz * lnz).clamp_min(1e-20))
    lnx, lny, lnz = lnx * inv_len, lny * inv_len, lnz * inv_len
    r_mean = 0.5 * (hx + hz)
    arc = torch.atan2(lx, lz) * r_mean
    return _BoxSurface(
        nx=c * lnx + s * lnz,  # local -> world
        ny=lny,
        nz=-s * lnx + c * lnz,
        u=torch.where(
            axis == 0,
            hz - sq(qx) * lz,
            torch.where(axis == 2, hx + sq(qz) * lx, torch.where(axis == 1, lx + hx, arc)),
        ),
        v=torch.where(axis == 1, lz + hz, ly + hy),
        fit_u=torch.where(axis == 0, 2 * hz, torch.where(axis == 3, 2 * math.pi * r_mean, 2 * hx)),
        fit_v=torch.where(axis == 1, 2 * hz, 2 * hy),
        mat=bp[..., 7].long(),
        axis=axis,
    )


def _surface(pk: PackedScenes, r: _Rays, h: _Hits) -> _Surface:
    """Normal, pattern coordinates and material of whatever each ray hits."""
    zero = torch.zeros_like(r.dx)
    one = torch.ones_like(r.dx)
    (r_nx, r_ny, r_nz), (r_u, r_v), r_mat = _room_surface(pk, h, zero, one)
    g_mat = _ground_material(pk, h)
    bs = _box_surface(pk, h, zero)
    is_box, is_room = h.is_box, h.is_room
    nx = torch.where(is_box, bs.nx, torch.where(is_room, r_nx, zero))
    ny = torch.where(is_box, bs.ny, torch.where(is_room, r_ny, one))
    nz = torch.where(is_box, bs.nz, torch.where(is_room, r_nz, zero))
    tu = torch.where(is_box, bs.u, torch.where(is_room, r_u, h.px))
    tv = torch.where(is_box, bs.v, torch.where(is_room, r_v, h.pz))
    mat_id = torch.where(is_box, bs.mat, torch.where(is_room, r_mat, g_mat))
    frame = torch.arange(len(pk), device=pk.mats.device)[:, None]
    mp = pk.mats.view(-1, _M_FIELDS)[frame * pk.mats.shape[1] + mat_id]  # [B, P, 14]
    fit = (mp[..., 3] > 0) & is_box
    pattern = mp[..., 0].long()
    top = is_box & (bs.axis == 1)  # roofs / table tops: no windows or doors on them
    pattern = torch.where(top, _TOP_PATTERN.to(pattern.device)[pattern], pattern)
    per_u = torch.where(fit, bs.fit_u, mp[..., 1])
    per_v = torch.where(fit, bs.fit_v, mp[..., 2])
    swap = mp[..., 12] > 0
    tu, tv = torch.where(swap, tv, tu), torch.where(swap, tu, tv)
    per_u, per_v = torch.where(swap, per_v, per_u), torch.where(swap, per_u, per_v)
    return _Surface(
        nx=nx, ny=ny, nz=nz, tex_u=tu / per_u + mp[..., 10], tex_v=tv / per_v + mp[..., 11],
        per_u=per_u, per_v=per_v, pattern=pattern, mp=mp,
    )


# --- shading ---------------------------------------------------------------------------------


def _albedo(
    pk: PackedScenes, r: _Rays, h: _Hits, s: _Surface, atlas: TextureAtlas
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Textured surface colour, with clouds sampled for the sky in the same atlas call.

    Returns:
        (albedo [B, P, 3], pattern value [B, P, 1] (cloud cover on sky pixels), pixel footprint
        on the surface [B, P] [m]).
    """
    # mip level from the pixel footprint on the surface
    ray_len = r.length
    cos_inc = ((s.nx * r.dx + s.ny * r.dy + s.nz * r.dz).abs() / ray_len).clamp_min(0.02)
    foot_m = h.tf / r.fx / cos_inc.sqrt()
    level = torch.log2((foot_m / torch.minimum(s.per_u, s.per_v) * atlas.tile_px).clamp_min(1.0))

    # sky: clouds on a plane 1 km up (sampled with the same atlas call)
    sky = ~h.finite
    el = (r.dy / ray_len).clamp_min(0.02)
    cloud_scale = 3000.0
    cu = r.dx / ray_len / el * (1000.0 / cloud_scale) + pk.seed[:, None].float() * 0.001
    cv = r.dz / ray_len / el * (1000.0 / cloud_scale)
    cl_level = torch.log2((1000.0 / el / r.fx / el / cloud_scale * atlas.tile_px).clamp_min(1))
    pattern = torch.where(sky, PATTERN_ID['clouds'], s.pattern)
    tex_u = torch.where(sky, cu, s.tex_u)
    tex_v = torch.where(sky, cv, s.tex_v)
    level = torch.where(sky, cl_level, level)
    pval = atlas.sample(pattern, tex_u, tex_v, level)[..., None]  # [B, P, 1]
    albedo = s.mp[..., 4:7] * (1 - pval) + s.mp[..., 7:10] * pval  # [B, P, 3]
    return albedo, pval, foot_m


def _lane_markings(
    pk: PackedScenes, h: _Hits, foot_m: torch.Tensor, albedo: torch.Tensor
) -> torch.Tensor:
    """Dashed lane lines and solid edge lines, 12 cm wide, painted on road pixels' albedo."""
    if not bool(pk.markings.any()):
        return albedo
    zero = torch.zeros_like(foot_m)
    px, pz = h.px, h.pz
    ax = px.abs()
    road_hw, lane_w = pk.ground[:, 1:2], pk.ground[:, 3:4]
    on_road = h.is_ground & (ax < road_hw) & pk.markings[:, None]
    rel = (px + road_hw) / lane_w
    d_lane = (torch.remainder(rel + 0.5, 1.0) - 0.5).abs() * lane_w
    dashed = (torch.remainder(pz, 12.0) < 3.0) & (ax < road_hw - 0.5)
    edge = (ax - (road_hw - 0.3)).abs()
    half_w = 0.06
    foot = foot_m.clamp_min(1e-6)
    cover_lane = ((half_w + foot / 2 - d_lane) / foot).clamp(0, 1) * (2 * half_w / foot).clamp(
        max=1.0
    )
    cover_edge = ((half_w + foot / 2 - edge) / foot).clamp(0, 1) * (2 * half_w / foot).clamp(
        max=1.0
    )
    paint = torch.where(dashed, cover_lane, zero).maximum(cover_edge)
    paint = torch.where(on_road, paint, zero)[..., None]
    return albedo * (1 - paint) + 0.7 * paint


def _sun_shadow(pk: PackedScenes, r: _Rays, h: _Hits, s: _Surface) -> torch.Tensor:
    """[B, P, 1]: 1 where a box blocks the way from the hit point to the sun."""
    points = (_by_tile(torch.where(h.finite, h.px, r.inf)), _by_tile(h.py), _by_tile(h.pz))
    normals = (_by_tile(s.nx), _by_tile(s.ny), _by_tile(s.nz))
    shadow = _cast_shadows(pk, points, normals, r.ty, r.tx)
    return shadow.view(len(pk), r.ty * r.tx * TILE_PX * TILE_PX, 1)


def _lit(pk: PackedScenes, r: _Rays, h: _Hits, s: _Surface, albedo: torch.Tensor) -> torch.Tensor:
    """Surface colour [B, P, 3] under ambient, sun (shadowed by boxes) and point light."""
    lt = pk.light
    sun = lt['sun_dir'][:, None, :]  # [B, 1, 3]
    ndl = (
        s.nx[..., None] * sun[..., 0:1]
        + s.ny[..., None] * sun[..., 1:2]
        + s.nz[..., None] * sun[..., 2:3]
    ).clamp_min(0)
    shadow = _sun_shadow(pk, r, h, s)
    irr = lt['ambient_rgb'][:, None, :] * (0.8 + 0.2 * s.ny[..., None])
    irr = irr + lt['sun_rgb'][:, None, :] * ndl * (1 - shadow)
    # point light (inverse square)
    lx_ = lt['point_m'][:, 0:1] - h.px
    ly_ = lt['point_m'][:, 1:2] - h.py
    lz_ = lt['point_m'][:, 2:3] - h.pz
    r2 = (lx_ * lx_ + ly_ * ly_ + lz_ * lz_).clamp_min(0.5)  # a lamp, not a point
    pdl = ((s.nx * lx_ + s.ny * ly_ + s.nz * lz_) / r2.sqrt()).clamp_min(0) / r2
    irr = irr + lt['point_rgb'][:, None, :] * pdl[..., None]
    emis = s.mp[..., 13:14]
    return albedo * (irr * (1 - emis) + 1.5 * emis)


def _fog(pk: PackedScenes, r: _Rays, h: _Hits, rgb: torch.Tensor) -> torch.Tensor:
    """Fade to the horizon colour with the distance along the ray (outdoors)."""
    lt = pk.light
    dist = h.tf * r.length
    fog = 1 - torch.exp(-lt['fog_per_m'][:, None] * dist)
    return rgb * (1 - fog[..., None]) + lt['sky_horizon'][:, None, :] * fog[..., None]


def _sky(
    pk: PackedScenes, r: _Rays, h: _Hits, pval: torch.Tensor, rgb: torch.Tensor
) -> torch.Tensor:
    """Sky colour with sun glow and clouds (cloud cover ``pval``) where the rays hit nothing."""
    lt = pk.light
    sun = lt['sun_dir'][:, None, :]  # [B, 1, 3]
    ray_len = r.length
    e = (r.dy / ray_len).clamp(-1, 1)
    grad = e.clamp(0, 1).pow(0.6)[..., None]
    sky_rgb = lt['sky_horizon'][:, None, :] * (1 - grad) + lt['sky_zenith'][:, None, :] * grad
    cos_sun = (r.dx * sun[..., 0] + r.dy * sun[..., 1] + r.dz * sun[..., 2]) / ray_len
    glow = (0.25 * cos_sun.clamp_min(0).pow(64) + 2.0 * (cos_sun > 0.9995).float())[..., None]
    sky_rgb = sky_rgb + glow * lt['sun_rgb'][:, None, :].clamp(max=1.0)
    cloud = pval * lt['clouds'][:, None, None] * (e[..., None] / 0.25).clamp(0, 1)
    sky_rgb = sky_rgb * (1 - cloud) + cloud * 0.9
    return torch.where((~h.finite)[..., None], sky_rgb, rgb)


# --- camera ----------------------------------------------------------------------------------


def _camera_response(
    pk: PackedScenes, r: _Rays, rgb: torch.Tensor, height: int, width: int, dev: torch.device
) -> torch.Tensor:
    """Auto exposure, white balance, vignette, gamma and sensor noise: uint8 [B, P, 3]."""
    lt = pk.light
    lum = rgb.mean(-1)
    gain = lt['exposure'][:, None] * 0.18 / lum.mean(1, keepdim=True).clamp_min(1e-4)
    rgb = rgb * gain[..., None] * lt['white_balance'][:, None, :]
    rn = ((r.uu[None] - r.cx) ** 2 + (r.vv[None] - r.cy) ** 2) / (0.25 * (width**2 + height**2))
    rgb = rgb * (1 - lt['vignette'][:, None] * rn)[..., None]
    rgb = rgb.clamp(0, 1).pow(1 / 2.2)
    noise = torch.empty_like(rgb)
    for i in range(len(pk)):  # per-frame generator: reproducible per (seed, device)
        gen = torch.Generator(device=dev).manual_seed(pk.noise_seeds[i])
        torch.rand(noise[i].shape, generator=gen, device=dev, out=noise[i])
    rgb = rgb + (lt['noise_std'] * math.sqrt(12.0))[:, None, None] * (noise - 0.5)
    return (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)  # [B, P, 3]


def _untile(x: torch.Tensor, r: _Rays, height: int, width: int) -> torch.Tensor:
    """[B, P, C] in tile order -> [B, C, H, W] in rows."""
    nb, ch, tp = x.shape[0], x.shape[-1], TILE_PX
    x = x.view(nb, r.ty, r.tx, tp, tp, ch).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(nb, ch, r.ty * tp, r.tx * tp)[:, :, :height, :width].contiguous()


def _lens_blur(image: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """Lens softness: a 3-tap blur along x then y, neighbour weight ``blur`` [B] (<= 1/3)."""
    blur = blur.clamp(0.0, 1.0 / 3.0)
    if not bool((blur > 0).any()):
        return image
    wgt = blur[:, None, None, None]
    x = image.float()
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1), mode='replicate')
    x = (1 - 2 * wgt) * xp[..., 1:-1, 1:-1] + wgt * (xp[..., 1:-1, :-2] + xp[..., 1:-1, 2:])
    xp = torch.nn.functional.pad(x, (0, 0, 1, 1), mode='replicate')
    x = (1 - 2 * wgt) * x + wgt * (xp[..., :-2, :] + xp[..., 2:, :])
    return (x + 0.5).clamp(0, 255).to(torch.uint8)


# --- entry points ----------------------------------------------------------------------------


@torch.no_grad()
def render_specs(
    specs: Sequence[SceneSpec] | PackedScenes,
    height: int,
    width: int,
    device: torch.device | str = 'cpu',
    frames_per_call: int | None = None,
) -> dict[str, torch.Tensor]:
    """Render scene descriptions by ray casting (one batch, stays on ``device``).

    Args:
        specs: Scenes to render (any mix of kinds), or ``pack_scenes`` of them at this size.
        height: Image height [px].
        width: Image width [px].
        device: Torch device to render on.
        frames_per_call: Frames vectorised together (default: 1 on CPU, where a frame's
            buffers stay in cache, all of them on other devices). Results do not depend on it
            beyond float rounding.

    Returns:
        Dict with ``'image'`` uint8 [B, 3, H, W] RGB, ``'depth_m'`` float32 [B, 1, H, W] planar
        depth [m] (+inf = sky), ``'intrinsics'`` float32 [B, 4] (fx, fy, cx, cy) [px].
    """
    if not len(specs):
        raise ValueError('no scenes to render')
    if height < 1 or width < 1:
        raise ValueError(f'bad size {height}x{width}')
    if isinstance(specs, PackedScenes):
        if (specs.height, specs.width) != (height, width):
            raise ValueError(f'scenes packed for {specs.height}x{specs.width}, '
                             f'rendered at {height}x{width}')
        packed = specs
    else:
        packed = pack_scenes(specs, height, width)
    dev = torch.device(device)
    chunk = frames_per_call or (1 if dev.type == 'cpu' else len(packed))
    if len(packed) > chunk:
        outs = [
            render_specs(packed.select(i, i + chunk), height, width, dev, chunk)
            for i in range(0, len(packed), chunk)
        ]
        return {key: torch.cat([o[key] for o in outs]) for key in outs[0]}
    pk = packed.to(dev)
    # geometry
    rays = _camera_rays(pk, height, width, dev)
    hits = _nearest_surface(pk, rays)
    surface = _surface(pk, rays, hits)
    # shading
    albedo, pval, foot_m = _albedo(pk, rays, hits, surface, texture_atlas(dev))
    albedo = _lane_markings(pk, hits, foot_m, albedo)
    rgb = _lit(pk, rays, hits, surface, albedo)
    rgb = _sky(pk, rays, hits, pval, _fog(pk, rays, hits, rgb))
    # camera (the image only; depth stays exact)
    image = _untile(_camera_response(pk, rays, rgb, height, width, dev), rays, height, width)
    depth = torch.where(hits.finite, hits.t, rays.inf)
    return {
        'image': _lens_blur(image, pk.light['blur']),
        'depth_m': _untile(depth[..., None], rays, height, width),
        'intrinsics': pk.k.clone(),
    }


def render_batch(
    kind: str,
    seeds: Sequence[int],
    height: int,
    width: int,
    device: torch.device | str = 'cpu',
) -> dict[str, torch.Tensor]:
    """Generate and render a batch of random scenes on ``device``.

    Args:
        kind: ``'indoor'`` or ``'outdoor'``.
        seeds: One non-negative seed per frame.
        height: Image height [px].
        width: Image width [px].
        device: Torch device (CPU or CUDA).

    Returns:
        Dict on ``device``: ``'image'`` uint8 [B, 3, H, W] RGB (divide by 255 for [0, 1]),
        ``'depth_m'`` float32 [B, 1, H, W] planar depth [m] with +inf for sky,
        ``'intrinsics'`` float32 [B, 4] (fx, fy, cx, cy) [px].
    """
    return render_specs([scene_spec(kind, s) for s in seeds], height, width, device)


def render_scene(
    kind: str, seed: int, height: int, width: int, device: torch.device | str = 'cpu'
) -> Sample:
    """Generate and render one random scene.

    Deterministic for (kind, seed, height, width) on a given device.

    Args:
        kind: ``'indoor'`` or ``'outdoor'``.
        seed: Non-negative seed.
        height: Image height [px].
        width: Image width [px].
        device: Torch device to render on (the result is returned as numpy).

    Returns:
        A ``Sample`` (depth +inf for sky).
    """
    out = render_batch(kind, [seed], height, width, device)
    return Sample(
        image=out['image'][0].permute(1, 2, 0).cpu().numpy(),
        depth_m=out['depth_m'][0, 0].cpu().numpy(),
        intrinsics=tuple(float(x) for x in out['intrinsics'][0].cpu()),  # type: ignore[arg-type]
        name=f'synthetic/{kind}/{seed}',
        scene=kind,
    )
