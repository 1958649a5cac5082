"""Outdoor scenes: streets, open fields and plazas / car parks, under sun or overcast sky.

The camera stands near x = 0, z = 0 and looks roughly along +z; a street runs along z with its
centre line at x = 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from metric_solver_ros.data.synthetic.builder import (
    _Builder,
    _hsv,
    _intrinsics,
    _near_camera,
    _person,
)
from metric_solver_ros.data.synthetic.scene import Camera, Ground, Lighting, SceneSpec


def _vehicle(b: _Builder, x: float, z: float, yaw: float) -> None:
    paint = b.solid(0.05, 0.9, 0.9)
    tyre = b.mat('plain', (1, 1), _hsv(0, 0, 0.05), _hsv(0, 0, 0.08))
    glass = b.mat(
        'vehicle_glass', (1, 1), b.materials[paint].colour_b, _hsv(0.58, 0.2, 0.15), fit=True
    )
    if b.p(0.85):  # car
        w, length = b.u(1.7, 1.95), b.u(3.8, 4.9)
        body_h, cab_h = b.u(0.55, 0.75), b.u(0.45, 0.6)
        y_body = 0.3
        cab_len = length * b.u(0.45, 0.6)
        cab_off = b.u(-0.3, 0.0) * length * 0.3
    else:  # van / truck / bus
        w, length = b.u(2.3, 2.55), b.u(6.0, 12.0)
        body_h, cab_h = b.u(1.8, 2.6), b.u(0.6, 0.9)
        y_body = 0.45
        cab_len = length * b.u(0.9, 0.97)
        cab_off = 0.0
    wheel = 2 * y_body + 0.05
    ax = length / 2 - wheel * 0.9
    b.group(
        x,
        z,
        yaw,
        [
            (0.0, y_body, 0.0, w, body_h, length, paint),
            (0.0, y_body + body_h, cab_off, w - 0.1, cab_h, cab_len, glass),
            (0.0, 0.0, ax, w - 0.08, wheel, wheel, tyre),
            (0.0, 0.0, -ax, w - 0.08, wheel, wheel, tyre),
        ],
    )


def _tree(b: _Builder, x: float, z: float, scale: float = 1.0) -> None:
    bark = b.mat(
        'wood',
        (b.u(0.3, 0.8), b.u(0.5, 1.5)),
        _hsv(0.07, 0.5, 0.15),
        _hsv(0.08, 0.4, 0.4),
        swap_uv=True,
    )
    trunk_h = b.u(1.5, 4.0) * scale
    tw = b.u(0.2, 0.5) * scale
    b.box(x, 0.0, z, tw, trunk_h + 0.5, tw, bark, b.u(0, 1), 'cylinder')
    cw, ch = b.u(2.0, 6.0) * scale, b.u(2.5, 7.0) * scale
    leaf = b.foliage()
    yaw = b.u(0, 1)
    if b.p(0.7):  # round crown (conifer-like when tall and narrow)
        b.box(x, trunk_h - 0.1 * ch, z, cw, ch * 1.2, cw * b.u(0.85, 1.15), leaf, yaw, 'ellipsoid')
        if b.p(0.5):
            dx, dz = b.u(-0.3, 0.3) * cw, b.u(-0.3, 0.3) * cw
            b.box(
                x + dx,
                trunk_h + 0.2 * ch,
                z + dz,
                cw * 0.7,
                ch * 0.8,
                cw * 0.7,
                leaf,
                yaw,
                'ellipsoid',
            )
    else:
        b.box(x, trunk_h, z, cw, ch, cw, leaf, yaw)
        b.box(x, trunk_h + ch * 0.15, z, cw * 0.8, ch * 0.7, cw * 0.8, leaf, yaw + math.pi / 4)


def _building(b: _Builder, x: float, z: float, w: float, h: float, d: float, yaw: float = 0.0):
    b.box(x, 0.0, z, w, h, d, b.facade() if b.p(0.85) else b.bricks(), yaw)


class _GroundMats(NamedTuple):
    """Material indices of the ground surfaces a scene may use."""

    asphalt: int
    paving: int
    grass: int
    dirt: int
    gravel: int


def _ground_materials(b: _Builder) -> _GroundMats:
    """Asphalt, paving, grass, dirt and gravel at their metric pattern sizes."""
    asphalt = b.grey(0.12, 0.3, 'noise_fine', b.u(1.0, 3.0))
    paving = (
        b.tiles(0.25, 0.5)
        if b.p(0.6)
        else b.mat(
            'grid', (4 * b.u(0.3, 0.6),) * 2, _hsv(0, 0, b.u(0.4, 0.7)), _hsv(0, 0, b.u(0.2, 0.4))
        )
    )
    grass_h = b.u(0.18, 0.3) if b.p(0.8) else b.u(0.08, 0.14)
    grass = b.mat(
        'noise_blotch' if b.p(0.5) else 'leaves',
        (b.u(1.0, 4.0),) * 2,
        _hsv(grass_h, 0.7, b.u(0.15, 0.35)),
        _hsv(grass_h, 0.6, b.u(0.35, 0.6)),
    )
    dirt = b.mat(
        'noise_blotch',
        (b.u(2.0, 8.0),) * 2,
        _hsv(0.08, 0.5, b.u(0.2, 0.35)),
        _hsv(0.09, 0.4, b.u(0.4, 0.6)),
    )
    gravel = b.mat('cells', (b.u(0.3, 1.0),) * 2, _hsv(0.08, 0.2, 0.25), _hsv(0.08, 0.15, 0.6))
    return _GroundMats(asphalt, paving, grass, dirt, gravel)


def _outdoor_pose(b: _Builder) -> tuple[float, float, float]:
    """Camera height [m], yaw [rad] (22 %: turned 20-100 deg off the z axis) and pitch [rad]."""
    rng = b.rng
    r = rng.random()
    cam_y = b.u(1.2, 1.8) if r < 0.5 else (b.u(0.3, 1.2) if r < 0.75 else b.u(1.8, 4.0))
    pitch = math.radians(b.u(-12, 6) - (cam_y - 1.5) * 1.5)
    yaw = float(rng.normal(0, math.radians(8)))
    r = rng.random()
    if r < 0.15:
        yaw += (1 if b.p(0.5) else -1) * math.radians(b.u(20, 60))
    elif r < 0.22:
        yaw += (1 if b.p(0.5) else -1) * math.radians(b.u(60, 100))
    return cam_y, yaw, pitch


def _building_row(b: _Builder, sgn: int, edge: float) -> None:
    """Buildings along one side (``sgn`` = -1 left, 1 right) of a street, beyond x = edge [m]."""
    zz = b.u(-40, -5)
    z_end = b.u(100, 350)
    setback = b.u(0.0, 4.0) if b.p(0.7) else b.u(4.0, 20.0)
    while zz < z_end:
        length = b.u(8, 40)
        bd = b.u(10, 30)
        floors = 1 + int(b.rng.geometric(0.25))
        h = min(floors, 15) * b.u(2.8, 3.6) + b.u(0.0, 2.0)
        if b.p(0.05):
            h = b.u(50, 120)
        _building(b, sgn * (edge + setback + bd / 2), zz + length / 2, bd, h, length)
        zz += length + (b.u(0, 6) if b.p(0.8) else b.u(10, 40))


def _street_side(b: _Builder, sgn: int, road_hw: float, side: float) -> None:
    """Buildings, lamp posts, trees, parked vehicles and pedestrians on one side of a street.

    Args:
        b: The scene builder.
        sgn: -1 left, 1 right.
        road_hw: Half width of the road [m].
        side: Width of the sidewalk [m].
    """
    rng = b.rng
    if b.p(0.9):
        _building_row(b, sgn, road_hw + side)
    for zz in np.arange(b.u(-5, 20), b.u(80, 220), b.u(15, 35)):
        ph = b.u(5.0, 9.0)
        pole = b.grey(0.2, 0.6)
        x = sgn * (road_hw + 0.5)
        b.box(x, 0.0, float(zz), 0.18, ph, 0.18, pole, 0.0, 'cylinder')
        b.box(x - sgn * 0.8, ph - 0.2, float(zz), 1.6, 0.15, 0.3, pole)
    if b.p(0.5):
        for zz in np.arange(b.u(0, 12), b.u(60, 200), b.u(8, 16)):
            _tree(b, sgn * (road_hw + side * b.u(0.5, 0.8)), float(zz))
    for _ in range(int(rng.integers(0, 10))):  # parked vehicles
        _vehicle(
            b,
            sgn * (road_hw - b.u(1.0, 1.3)),
            b.u(-5, 150),
            (0.0 if b.p(0.5) else math.pi) + b.u(-0.05, 0.05),
        )
    for _ in range(int(rng.integers(0, 6))):
        _person(b, sgn * (road_hw + b.u(0.5, side)), b.u(2, 60), b.u(0, 6.3))


def _street(b: _Builder, mats: _GroundMats) -> tuple[Ground, float]:
    """A straight street along z: 1-6 lanes, sidewalks, both sides built up, traffic.

    Returns:
        (the ground, camera x [m]: in a lane, 20 % of the time on a sidewalk).
    """
    rng = b.rng
    lanes = int(rng.integers(1, 7))
    lane_w = b.u(2.8, 3.7)
    road_hw = lanes * lane_w / 2
    side = b.u(1.5, 5.0)
    ground = Ground(0.0, road_hw, side, lane_w, b.p(0.85), (mats.asphalt, mats.paving, mats.grass))
    cam_x = -road_hw + lane_w * (int(rng.integers(0, lanes)) + 0.5) + b.u(-0.4, 0.4)
    if b.p(0.2):
        cam_x = (1 if b.p(0.5) else -1) * (road_hw + side / 2)
    edge = road_hw + side
    for sgn in (-1, 1):
        _street_side(b, sgn, road_hw, side)
    for _ in range(int(rng.integers(0, 7))):  # traffic
        lane = int(rng.integers(0, lanes))
        _vehicle(
            b,
            -road_hw + lane_w * (lane + 0.5) + b.u(-0.3, 0.3),
            b.u(4, 150),
            (0.0 if lane >= lanes / 2 else math.pi) + b.u(-0.05, 0.05),
        )
    if b.p(0.4):  # a block closing the street
        zz = b.u(80, 300)
        _building(b, b.u(-10, 10), zz + 10, 2 * edge + b.u(20, 80), b.u(8, 40), 20)
    return ground, cam_x


def _field_landscape(b: _Builder) -> None:
    """Trees, tree lines / forest edges, distant hills and houses of an open field."""
    rng = b.rng
    for _ in range(int(rng.integers(3, 30))):
        z = float(np.exp(b.u(math.log(6), math.log(250))))
        x = b.u(-1, 1) * (8 + z)
        if abs(x) < 3:
            x += 6 * math.copysign(1, x)
        _tree(b, x, z, b.u(0.7, 1.5))
    for _ in range(int(rng.integers(0, 4))):  # tree lines / forest edges
        z = b.u(50, 400)
        b.box(
            b.u(-200, 200),
            0.0,
            z,
            b.u(80, 500),
            b.u(8, 25),
            b.u(10, 30),
            b.foliage(),
            b.u(-0.5, 0.5),
        )
    for _ in range(int(rng.integers(0, 3))):  # distant hills
        z = b.u(300, 900)
        b.box(
            b.u(-600, 600),
            0.0,
            z,
            b.u(300, 1500),
            b.u(20, 120),
            b.u(200, 400),
            b.foliage() if b.p(0.6) else b.grey(0.2, 0.5, 'noise_blotch', 50.0),
            b.u(-0.6, 0.6),
        )
    for _ in range(int(rng.integers(0, 5))):  # houses, barns
        z = b.u(15, 300)
        x = b.u(-1, 1) * (10 + z)
        _building(b, x, z, b.u(6, 25), b.u(3, 10), b.u(6, 20), b.u(-0.8, 0.8))


def _field_fixtures(b: _Builder) -> None:
    """A line of power poles and a fence, each 40 % of the time."""
    if b.p(0.4):  # power line poles
        x = b.u(-30, 30)
        pole = b.wood()
        for zz in np.arange(b.u(5, 30), 400, b.u(35, 60)):
            b.box(x, 0.0, float(zz), 0.3, b.u(8, 12), 0.3, pole, 0.0, 'cylinder')
    if b.p(0.4):  # fence
        x = b.u(3, 15) * (1 if b.p(0.5) else -1)
        fence = b.wood()
        z0, z1 = b.u(-5, 10), b.u(30, 120)
        b.box(x, 0.9, (z0 + z1) / 2, 0.06, 0.1, z1 - z0, fence)
        b.box(x, 0.4, (z0 + z1) / 2, 0.06, 0.1, z1 - z0, fence)
        for zz in np.arange(z0, z1, b.u(2, 3.5)):
            b.box(x, 0.0, float(zz), 0.1, 1.2, 0.1, fence)


def _field_clutter(b: _Builder) -> None:
    """Rocks, bushes, people and vehicles near the camera in an open field."""
    rng = b.rng
    for _ in range(int(rng.integers(0, 8))):  # rocks
        s_ = b.u(0.2, 1.5)
        z = b.u(2, 60)
        b.box(
            b.u(-1, 1) * (3 + z),
            -0.25 * s_,
            z,
            s_ * b.u(0.7, 1.5),
            s_ * b.u(0.4, 1),
            s_,
            b.mat('cells', (b.u(0.5, 2),) * 2, _hsv(0.1, 0.1, 0.2), _hsv(0.1, 0.1, 0.6)),
            b.u(0, 3),
            'ellipsoid' if b.p(0.6) else 'box',
        )
    for _ in range(int(rng.integers(0, 12))):  # bushes
        s_ = b.u(0.5, 2.5)
        z = float(np.exp(b.u(math.log(3), math.log(120))))
        b.box(
            b.u(-1, 1) * (3 + z),
            -0.2 * s_,
            z,
            s_ * b.u(1, 2),
            s_,
            s_ * b.u(1, 2),
            b.foliage(),
            b.u(0, 3),
            'ellipsoid',
        )
    for _ in range(int(rng.integers(0, 3))):
        z = b.u(4, 50)
        _person(b, b.u(-1, 1) * (2 + z * 0.5), z, b.u(0, 6.3))
    for _ in range(int(rng.integers(0, 2))):
        z = b.u(6, 80)
        _vehicle(b, b.u(-1, 1) * (3 + z * 0.3), z, b.u(0, 6.3))


def _field(b: _Builder, mats: _GroundMats) -> tuple[Ground, float]:
    """Open country, half the time with a track along z.

    Returns:
        (the ground, camera x [m]).
    """
    cam_x = 0.0
    if b.p(0.5):
        road_hw = b.u(1.2, 3.0)
        ground = Ground(
            0.0, road_hw, b.u(0.3, 1.5), 3.0, False, (mats.gravel, mats.dirt, mats.grass)
        )
        cam_x = b.u(-road_hw, road_hw) * 0.7
    else:
        grass = mats.grass
        ground = Ground(0.0, 0.0, 0.0, 3.0, False, (grass, grass, grass if b.p(0.6) else mats.dirt))
    _field_landscape(b)
    _field_fixtures(b)
    _field_clutter(b)
    return ground, cam_x


def _plaza(b: _Builder, mats: _GroundMats) -> Ground:
    """A paved plaza / car park: rows of parked cars, buildings around, people, trees, poles."""
    rng = b.rng
    paving = mats.paving
    ground = Ground(
        0.0, 0.0, 0.0, 3.0, False, (paving, paving, mats.asphalt if b.p(0.5) else paving)
    )
    rows = int(rng.integers(1, 5))
    z0 = b.u(5, 20)
    for row in range(rows):
        zz = z0 + row * b.u(12, 16)
        for xx in np.arange(b.u(-40, -10), b.u(10, 40), b.u(2.4, 2.8)):
            if b.p(0.65):
                _vehicle(b, float(xx), zz, (0.0 if b.p(0.5) else math.pi) + b.u(-0.08, 0.08))
    for _ in range(int(rng.integers(3, 12))):  # surrounding buildings
        ang = b.u(-1.4, 1.4)
        dist = b.u(30, 220)
        _building(
            b,
            dist * math.sin(ang),
            dist * math.cos(ang),
            b.u(10, 60),
            b.u(5, 50),
            b.u(10, 40),
            b.u(-0.3, 0.3),
        )
    for _ in range(int(rng.integers(0, 12))):
        _person(b, b.u(-20, 20), b.u(3, 40), b.u(0, 6.3))
    for _ in range(int(rng.integers(0, 8))):
        _tree(b, b.u(-40, 40), b.u(5, 80))
    pole = b.grey(0.2, 0.6)
    for _ in range(int(rng.integers(0, 8))):
        b.box(b.u(-30, 30), 0.0, b.u(5, 80), 0.2, b.u(5, 10), 0.2, pole, 0.0, 'cylinder')
    return ground


def _outdoor_lighting(b: _Builder) -> Lighting:
    """Sun and sky (30 %: overcast, no shadows), haze or fog; camera response."""
    overcast = b.p(0.3)
    elev, az = math.radians(b.u(12, 70)), b.u(0, 2 * math.pi)
    if overcast:
        g = b.u(0.5, 0.8)
        zenith, horizon = _hsv(0.6, 0.05, g), _hsv(0.6, 0.03, g + 0.1)
        sun, amb = b.u(0.1, 0.5), b.u(0.7, 1.1)
    else:
        zenith = _hsv(b.u(0.55, 0.64), b.u(0.4, 0.75), b.u(0.6, 0.95))
        horizon = _hsv(b.u(0.55, 0.62), b.u(0.05, 0.25), b.u(0.8, 1.0))
        sun, amb = b.u(1.5, 2.8), b.u(0.3, 0.6)
    warm = b.u(0.0, 0.12)
    visibility = b.u(150, 800) if b.p(0.25) else (b.u(800, 6000) if b.p(0.6) else 1e9)
    return Lighting(
        sun_dir=(math.cos(elev) * math.sin(az), math.sin(elev), math.cos(elev) * math.cos(az)),
        sun_rgb=(sun * (1 + warm), sun, sun * (1 - warm)),
        ambient_rgb=tuple(amb * (0.5 + 0.5 * c / max(max(zenith), 1e-3)) for c in zenith),
        sky_zenith=zenith,
        sky_horizon=horizon,
        fog_per_m=3.0 / visibility,
        exposure=b.u(0.7, 1.3),
        noise_std=b.u(0.0, 0.015),
        clouds=0.0 if overcast else b.u(0.0, 1.0),
        shadows=not overcast,
        vignette=b.u(0.0, 0.3),
        white_balance=tuple(b.u(0.93, 1.07) for _ in range(3)),
        blur=b.u(0.0, 0.3) if b.p(0.6) else 0.0,
    )


def _outdoor(rng: np.random.Generator) -> SceneSpec:
    """A random street (50 %), field (30 %) or plaza / car park (20 %) drawn from ``rng``."""
    b = _Builder(rng)
    mode = rng.choice(['street', 'field', 'plaza'], p=[0.5, 0.3, 0.2])
    mats = _ground_materials(b)
    fx_w, fy_w, cx_w, cy_h = _intrinsics(b)
    cam_y, yaw, pitch = _outdoor_pose(b)
    if mode == 'street':
        ground, cam_x = _street(b, mats)
    elif mode == 'field':
        ground, cam_x = _field(b, mats)
    else:  # plaza / car park
        ground, cam_x = _plaza(b, mats), 0.0
    roll = float(np.clip(rng.normal(0, math.radians(1.5)), -0.07, 0.07))
    cam = Camera(fx_w, fy_w, cx_w, cy_h, (cam_x, cam_y, 0.0), yaw, pitch, roll)
    b.boxes = [bx for bx in b.boxes if not _near_camera(bx, cam.position_m, 0.3)]
    light = _outdoor_lighting(b)
    return SceneSpec(
        cam, b.materials, b.boxes, room=None, ground=ground, lighting=light, kind='outdoor'
    )
