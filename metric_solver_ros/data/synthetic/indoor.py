"""Indoor scenes: rooms, halls and tabletop views furnished at real sizes.

A room is the inside of an axis-aligned box from (0, 0, 0) to (width, height, depth) [m]; wall
items stand against its walls, free-standing furniture on its floor.
"""

from __future__ import annotations

import math

import numpy as np

from metric_solver_ros.data.synthetic.builder import (
    _Builder,
    _hsv,
    _intrinsics,
    _near_camera,
    _person,
)
from metric_solver_ros.data.synthetic.scene import Camera, Lighting, Room, SceneSpec


def _table(b: _Builder, x: float, z: float, yaw: float, w: float, d: float, h: float) -> int:
    top = b.wood() if b.p(0.6) else b.solid(0.3, 0.95, 0.3)
    legs = top if b.p(0.5) else b.grey(0.1, 0.7)
    th = b.u(0.025, 0.05)
    lw = b.u(0.04, 0.07)
    ix, iz = w / 2 - lw / 2 - 0.03, d / 2 - lw / 2 - 0.03
    parts = [(0.0, h - th, 0.0, w, th, d, top)]
    parts += [(sx * ix, 0.0, sz * iz, lw, h - th, lw, legs) for sx in (-1, 1) for sz in (-1, 1)]
    b.group(x, z, yaw, parts)
    return top


def _chair(b: _Builder, x: float, z: float, yaw: float, mat: int) -> None:
    w = b.u(0.4, 0.5)
    sh = b.u(0.42, 0.48)
    lw = 0.035
    back = b.u(0.35, 0.5)
    parts = [(0.0, sh - 0.04, 0.0, w, 0.04, w, mat), (0.0, sh, -w / 2 + 0.02, w, back, 0.04, mat)]
    i = w / 2 - lw / 2
    parts += [(sx * i, 0.0, sz * i, lw, sh - 0.04, lw, mat) for sx in (-1, 1) for sz in (-1, 1)]
    b.group(x, z, yaw, parts)


def _tabletop_objects(b: _Builder, x: float, z: float, yaw: float, w: float, d: float, y0: float):
    """Small objects (cups, books, boxes, bottles, a laptop or monitor) on a table top."""
    n = int(b.rng.integers(2, 10))
    c, s = math.cos(yaw), math.sin(yaw)
    for _ in range(n):
        kind = b.rng.choice(
            ['cup', 'book', 'box', 'bottle', 'screen'], p=[0.25, 0.2, 0.3, 0.15, 0.1]
        )
        if kind == 'cup':
            ow, oh, od = (b.u(0.07, 0.1),) * 3
            oh = b.u(0.08, 0.12)
            m = b.solid(0.2, 0.95)
        elif kind == 'book':
            ow, oh, od = b.u(0.14, 0.3), b.u(0.015, 0.06), b.u(0.2, 0.3)
            m = b.solid(0.2, 0.8)
        elif kind == 'box':
            ow, oh, od = b.u(0.05, 0.35), b.u(0.04, 0.3), b.u(0.05, 0.35)
            m = b.wood() if b.p(0.2) else (b.fabric() if b.p(0.3) else b.solid(0.15, 0.9))
        elif kind == 'bottle':
            ow = od = b.u(0.05, 0.09)
            oh = b.u(0.18, 0.32)
            m = b.solid(0.1, 0.8)
        else:
            ow, oh, od = b.u(0.3, 0.6), b.u(0.2, 0.4), b.u(0.02, 0.04)
            m = b.mat('screen', (1, 1), _hsv(0, 0, 0.02), _hsv(0, 0, 0.05), fit=True)
            b.materials[m].colour_a = _hsv(b.u(0, 1), b.u(0.2, 0.8), b.u(0.3, 0.9))
            b.materials[m].emission = b.u(0.3, 0.8)
        lx = b.u(-w / 2 + ow / 2, w / 2 - ow / 2) if w > ow else 0.0
        lz = b.u(-d / 2 + od / 2, d / 2 - od / 2) if d > od else 0.0
        oyaw = yaw + (b.u(-0.6, 0.6) if kind != 'screen' else b.u(-0.2, 0.2))
        shape = 'cylinder' if kind in ('cup', 'bottle') else 'box'
        if kind == 'box' and b.p(0.25):  # fruit, balls
            shape = 'ellipsoid'
            oh = ow = od = min(ow, oh, od) * 2 + 0.03
        b.box(x + c * lx + s * lz, y0, z - s * lx + c * lz, ow, oh, od, m, oyaw, shape)


def _room_shell(b: _Builder, width: float, depth: float, height: float) -> Room:
    """The room box [m] with floor, ceiling and wall materials (35 %: one accent wall)."""
    rng = b.rng
    r = rng.random()
    if r < 0.35:
        floor = b.wood('planks')
    elif r < 0.6:
        floor = b.tiles(0.2, 0.6)
    elif r < 0.8:
        floor = b.fabric()
        b.materials[floor].period_m = (b.u(0.3, 1.0),) * 2
    else:
        floor = b.grey(0.3, 0.7, 'noise_blotch', b.u(1.5, 4))
    ceiling = (
        b.grey(0.75, 0.95)
        if b.p(0.7)
        else b.mat('grid', (2.4, 2.4), _hsv(0, 0, 0.9), _hsv(0, 0, 0.5))
    )
    wall = b.paint()
    walls = [wall] * 4
    if b.p(0.35):
        accent = rng.choice(['paint', 'bricks', 'tiles', 'stripes'])
        if accent == 'bricks':
            m = b.bricks()
        elif accent == 'tiles':
            m = b.tiles(0.1, 0.3)
        elif accent == 'stripes':
            h = b.u(0, 1)
            m = b.mat('stripes', (1.0, b.u(0.2, 0.6)), _hsv(h, 0.2, 0.5), _hsv(h, 0.2, 0.85))
        else:
            m = b.paint(0.3, 0.9, 0.6)
        walls[int(rng.integers(0, 4))] = m
    return Room((0.0, width, 0.0, height, 0.0, depth), (floor, ceiling, *walls))


def _wall_point(
    k: int, s_: float, off: float, width: float, depth: float
) -> tuple[float, float, float]:
    """(x [m], z [m], yaw [rad]) of a point ``s_`` [m] along wall k, ``off`` [m] into the room.

    Walls: 0 at x = 0, 1 at x = width, 2 at z = 0, 3 at z = depth; the yaw faces into the room.
    """
    if k == 0:
        return off, s_, math.pi / 2
    if k == 1:
        return width - off, s_, -math.pi / 2
    if k == 2:
        return s_, off, 0.0
    return s_, depth - off, math.pi


def _wall_fixture(
    b: _Builder, item: str, height: float, door_mat: int
) -> tuple[float, float, float, float, int]:
    """A door, window, painting or cabinet: (w, h, d, bottom y0) [m] and its material."""
    if item == 'door':
        return b.u(0.8, 1.0), b.u(2.0, 2.1), 0.05, 0.0, door_mat
    if item == 'window':
        w, h, d, y0 = b.u(0.6, 2.2), b.u(0.8, 1.6), 0.06, b.u(0.7, 1.0)
        h = min(h, height - y0 - 0.2)
        sky = _hsv(b.u(0.5, 0.62), b.u(0.05, 0.5), b.u(0.7, 1.0))
        m = b.mat('window', (1, 1), _hsv(0, 0, b.u(0.6, 0.95)), sky, fit=True)
        b.materials[m].emission = b.u(0.5, 0.95)
        return w, h, d, y0, m
    if item == 'painting':
        w, h, d, y0 = b.u(0.3, 1.2), b.u(0.3, 1.0), 0.03, b.u(1.1, 1.5)
        m = b.mat('screen', (1, 1), _hsv(b.u(0, 1), 0.5, 0.6), _hsv(0, 0, 0.1), fit=True)
        b.materials[m].colour_a = _hsv(b.u(0, 1), b.u(0.2, 0.8), b.u(0.3, 0.9))
        b.materials[m].colour_b = _hsv(b.u(0, 1), b.u(0.1, 0.5), b.u(0.05, 0.8))
        return w, h, d, y0, m
    # cabinet
    w, h, d, y0 = b.u(0.4, 1.6), b.u(0.7, 2.1), b.u(0.35, 0.6), 0.0
    body = b.wood() if b.p(0.5) else b.solid(0.3, 0.95, 0.3)
    col = b.materials[body].colour_b
    m = b.mat('drawers', (1, 1), col, _hsv(0, 0, 0.1), fit=True)
    return w, h, d, y0, m


def _wall_shelf(b: _Builder, k: int, s_: float, width: float, depth: float) -> float:
    """A bookshelf starting ``s_`` [m] along wall k; returns its width [m]."""
    w, h, d = b.u(0.6, 1.2), b.u(1.0, 2.2), b.u(0.25, 0.4)
    m = b.wood()
    x, z, yaw = _wall_point(k, s_ + w / 2, d / 2, width, depth)
    n_shelf = max(2, int(h / 0.35))
    parts = [(0.0, 0.0, -d / 2 + 0.01, w, h, 0.02, m)]
    parts += [(sx * (w / 2 - 0.01), 0.0, 0.0, 0.02, h, d, m) for sx in (-1, 1)]
    parts += [(0.0, i * h / n_shelf, 0.0, w, 0.02, d, m) for i in range(n_shelf + 1)]
    for i in range(n_shelf):  # books
        if b.p(0.7):
            bw = b.u(0.2, w - 0.05)
            parts.append(
                (
                    b.u(-0.02, 0.02),
                    i * h / n_shelf + 0.02,
                    0.0,
                    bw,
                    b.u(0.15, 0.3),
                    d * 0.8,
                    b.solid(0.15, 0.8),
                )
            )
    b.group(x, z, yaw, parts)
    return w


def _wall_sofa(b: _Builder, k: int, s_: float, width: float, depth: float) -> float:
    """A sofa starting ``s_`` [m] along wall k; returns its width [m]."""
    w, d = b.u(1.4, 2.4), b.u(0.8, 1.0)
    m = b.fabric()
    x, z, yaw = _wall_point(k, s_ + w / 2, d / 2, width, depth)
    parts = [(0.0, 0.0, 0.0, w, 0.45, d, m), (0.0, 0.45, -d / 2 + 0.1, w, 0.4, 0.2, m)]
    parts += [(sx * (w / 2 - 0.1), 0.45, 0.0, 0.2, 0.2, d, m) for sx in (-1, 1)]
    b.group(x, z, yaw, parts)
    return w


def _wall_items(b: _Builder, width: float, depth: float, height: float) -> None:
    """Doors, windows, paintings, cabinets, shelves and sofas along the four walls, with gaps."""
    rng = b.rng
    door_mat = b.mat('door', (1, 1), b.materials[b.wood()].colour_b, _hsv(0, 0, 0.15), fit=True)
    for k in range(4):
        length = depth if k < 2 else width
        s_ = b.u(0.0, 1.0)
        while s_ < length - 0.5:
            item = rng.choice(
                ['gap', 'door', 'window', 'cabinet', 'painting', 'shelf', 'sofa'],
                p=[0.25, 0.12, 0.15, 0.18, 0.12, 0.1, 0.08],
            )
            if item == 'gap':
                s_ += b.u(0.3, 2.0)
                continue
            if item in ('shelf', 'sofa'):  # placed without the end-of-wall check below
                place = _wall_shelf if item == 'shelf' else _wall_sofa
                s_ += place(b, k, s_, width, depth) + b.u(0.05, 0.5)
                continue
            w, h, d, y0, m = _wall_fixture(b, item, height, door_mat)
            if s_ + w > length:
                break
            x, z, yaw = _wall_point(k, s_ + w / 2, d / 2, width, depth)
            b.box(x, y0, z, w, h, d, m, yaw)
            s_ += w + b.u(0.05, 0.5)


def _free_xz(b: _Builder, margin: float, width: float, depth: float) -> tuple[float, float]:
    """A random floor point (x, z) [m], ``margin`` [m] from the walls where the room allows."""
    return b.u(margin, max(width - margin, margin + 0.01)), b.u(
        margin, max(depth - margin, margin + 0.01)
    )


def _table_set(b: _Builder, x: float, z: float, yaw: float) -> None:
    """A table centred at (x, z) [m], chairs on its long sides, sometimes objects on top."""
    w, d = b.u(0.8, 2.0), b.u(0.6, 1.0)
    h = b.u(0.7, 0.78)
    _table(b, x, z, yaw, w, d, h)
    chair_m = b.wood() if b.p(0.5) else b.solid(0.1, 0.9)
    for side in (-1, 1):
        if b.p(0.6):
            cz = side * (d / 2 + b.u(0.1, 0.35))
            cx_ = b.u(-w / 3, w / 3)
            c, s = math.cos(yaw), math.sin(yaw)
            _chair(
                b,
                x + c * cx_ + s * cz,
                z - s * cx_ + c * cz,
                yaw + (0.0 if side > 0 else math.pi) + b.u(-0.4, 0.4),
                chair_m,
            )
    if b.p(0.5):
        _tabletop_objects(b, x, z, yaw, w * 0.9, d * 0.9, h)


def _free_standing(b: _Builder, mode: str, width: float, depth: float, height: float) -> None:
    """1-3 (halls: 1-8) tables with chairs, beds, crates, plants, people or pillars."""
    rng = b.rng
    n_free = int(rng.integers(1, 4 if mode != 'hall' else 9))
    for _ in range(n_free):
        item = rng.choice(
            ['table', 'bed', 'crate', 'plant', 'person', 'pillar'],
            p=[0.4, 0.1, 0.2, 0.12, 0.1, 0.08],
        )
        x, z = _free_xz(b, 0.8, width, depth)
        yaw = b.u(-0.2, 0.2) + (math.pi / 2 if b.p(0.5) else 0.0)
        if item == 'table':
            _table_set(b, x, z, yaw)
        elif item == 'bed':
            w, d = b.u(0.9, 1.8), b.u(1.9, 2.1)
            m = b.fabric()
            b.group(
                x,
                z,
                yaw,
                [
                    (0, 0, 0, w, b.u(0.4, 0.55), d, m),
                    (0, 0, -d / 2, w, b.u(0.8, 1.1), 0.06, b.wood()),
                ],
            )
        elif item == 'crate':
            s_ = b.u(0.25, 0.8)
            m = b.wood() if b.p(0.4) else b.grey(0.3, 0.8, 'noise_fine', 0.5)
            b.box(x, 0.0, z, s_ * b.u(0.8, 1.3), s_, s_ * b.u(0.8, 1.3), m, b.u(-0.5, 0.5))
        elif item == 'plant':
            pot = b.solid(0.2, 0.7)
            s_ = b.u(0.25, 0.45)
            b.box(x, 0.0, z, s_, s_ * 1.1, s_, pot, 0.0, 'cylinder' if b.p(0.6) else 'box')
            fh = b.u(0.4, 1.4)
            b.box(x, s_ * 1.1, z, s_ * 2, fh, s_ * 2, b.foliage(), b.u(0, 1), 'ellipsoid')
        elif item == 'person':
            _person(b, x, z, b.u(0, 6.3))
        else:
            s_ = b.u(0.3, 0.6)
            m = b.paint() if b.p(0.7) else b.grey(0.5, 0.8)
            b.box(x, 0.0, z, s_, height, s_, m, 0.0, 'cylinder' if b.p(0.5) else 'box')


def _tabletop_view(
    b: _Builder, width: float, depth: float
) -> tuple[tuple[float, float, float], float, float]:
    """A table laid with objects and a camera looking at it from one long side.

    Returns:
        (camera position (x, y, z) [m], yaw [rad], pitch [rad]).
    """
    tw, td = b.u(0.8, 2.0), b.u(0.6, 1.2)
    th = b.u(0.65, 0.95)
    tx, tz = _free_xz(b, min(1.2, width / 2 - 0.05, depth / 2 - 0.05), width, depth)
    tyaw = b.u(0, 2 * math.pi)
    _table(b, tx, tz, tyaw, tw, td, th)
    _tabletop_objects(b, tx, tz, tyaw, tw * 0.9, td * 0.9, th)
    # camera in front of one long side, looking at the table top
    back = td / 2 + b.u(0.1, 0.6)
    c, s = math.cos(tyaw), math.sin(tyaw)
    cam_x, cam_z = tx - s * back, tz - c * back
    cam_y = th + b.u(0.15, 0.8)
    lat = b.u(-tw / 4, tw / 4)
    look_x, look_z = tx + lat * c, tz - lat * s
    yaw = math.atan2(look_x - cam_x, look_z - cam_z) + b.u(-0.2, 0.2)
    dist = math.hypot(look_x - cam_x, look_z - cam_z)
    pitch = -math.atan2(cam_y - th, dist) + b.u(-0.15, 0.2)
    cam_x = float(np.clip(cam_x, 0.25, width - 0.25))
    cam_z = float(np.clip(cam_z, 0.25, depth - 0.25))
    return (cam_x, cam_y, cam_z), yaw, pitch


def _room_view(
    b: _Builder, width: float, depth: float, height: float
) -> tuple[tuple[float, float, float], float, float]:
    """A camera looking roughly towards the room centre (30 %: an object close in front).

    Returns:
        (camera position (x, y, z) [m], yaw [rad], pitch [rad]).
    """
    cam_x, cam_z = b.u(0.3, width - 0.3), b.u(0.3, depth - 0.3)
    r = b.rng.random()
    cam_y = b.u(0.25, 0.7) if r < 0.25 else (b.u(1.0, 1.8) if r < 0.8 else b.u(0.7, 2.3))
    cam_y = min(cam_y, height - 0.2)
    # look roughly towards the room centre
    yaw = math.atan2(width / 2 - cam_x, depth / 2 - cam_z) + b.u(-1.2, 1.2)
    pitch = math.radians(b.u(-30, 10) if cam_y > 0.8 else b.u(-15, 15))
    if b.p(0.3):  # something near, in front of the camera
        dist = b.u(0.4, 2.0)
        ox, oz = cam_x + math.sin(yaw) * dist, cam_z + math.cos(yaw) * dist
        if 0.3 < ox < width - 0.3 and 0.3 < oz < depth - 0.3:
            s_ = b.u(0.2, 0.7)
            if b.p(0.5):
                _chair(b, ox, oz, b.u(0, 6.3), b.solid(0.1, 0.9))
            else:
                b.box(ox, 0.0, oz, s_, s_ * b.u(0.5, 2.0), s_, b.solid(0.1, 0.9), b.u(0, 1))
    return (cam_x, cam_y, cam_z), yaw, pitch


def _ceiling_lights(b: _Builder, width: float, depth: float, height: float) -> None:
    """0-4 emissive light panels / fittings under the ceiling."""
    lamp = b.mat('plain', (1, 1), _hsv(0.1, 0.05, 1.0), _hsv(0.1, 0.05, 1.0), emission=1.0)
    for _ in range(int(b.rng.integers(0, 5))):  # ceiling light panels / fittings
        lw, ld = (b.u(0.3, 0.6),) * 2 if b.p(0.5) else (b.u(1.0, 1.5), b.u(0.15, 0.6))
        lx, lz = _free_xz(b, 0.5, width, depth)
        b.box(lx, height - 0.04, lz, lw, 0.04, ld, lamp, 0.0 if b.p(0.8) else math.pi / 2)


def _indoor_lighting(b: _Builder, width: float, depth: float, height: float) -> Lighting:
    """Window sun, a ceiling point light and ambient light; camera response."""
    warm = b.u(-0.08, 0.08)
    amb = b.u(0.12, 0.35)
    elev, az = b.u(0.4, 1.2), b.u(0, 2 * math.pi)
    return Lighting(
        sun_dir=(math.cos(elev) * math.sin(az), math.sin(elev), math.cos(elev) * math.cos(az)),
        sun_rgb=(b.u(0.0, 0.8),) * 3,
        ambient_rgb=(amb * (1 + warm), amb, amb * (1 - warm)),
        point_m=(b.u(0.2, 0.8) * width, height - 0.15, b.u(0.2, 0.8) * depth),
        point_rgb=tuple(b.u(1.0, 5.0) * g for g in (1.0 + warm, 1.0, 1.0 - warm)),
        exposure=b.u(0.7, 1.3),
        noise_std=b.u(0.0, 0.02),
        shadows=True,
        vignette=b.u(0.0, 0.35),
        white_balance=tuple(b.u(0.92, 1.08) for _ in range(3)),
        blur=b.u(0.0, 0.3) if b.p(0.6) else 0.0,
    )


def _indoor(rng: np.random.Generator) -> SceneSpec:
    """A random room (55 %), hall (15 %) or tabletop view (30 %) drawn from ``rng``."""
    b = _Builder(rng)
    mode = rng.choice(['room', 'hall', 'tabletop'], p=[0.55, 0.15, 0.3])
    if mode == 'hall':
        width, depth, height = b.u(8, 20), b.u(10, 24), b.u(3.2, 6.0)
    else:
        width, depth, height = b.u(2.6, 9.0), b.u(3.0, 14.0), b.u(2.3, 3.2)
    room = _room_shell(b, width, depth, height)
    _wall_items(b, width, depth, height)
    _free_standing(b, mode, width, depth, height)
    fx_w, fy_w, cx_w, cy_h = _intrinsics(b)
    if mode == 'tabletop':
        position_m, yaw, pitch = _tabletop_view(b, width, depth)
    else:
        position_m, yaw, pitch = _room_view(b, width, depth, height)
    _ceiling_lights(b, width, depth, height)
    roll = float(np.clip(rng.normal(0, math.radians(2)), -0.09, 0.09))
    cam = Camera(fx_w, fy_w, cx_w, cy_h, position_m, yaw, pitch, roll)
    b.boxes = [bx for bx in b.boxes if not _near_camera(bx, cam.position_m, 0.2)]
    light = _indoor_lighting(b, width, depth, height)
    return SceneSpec(
        cam, b.materials, b.boxes, room=room, ground=None, lighting=light, kind='indoor'
    )
