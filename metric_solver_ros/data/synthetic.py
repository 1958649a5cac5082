"""A procedural world with exact metric depth, rendered by vectorised ray casting in torch.

Scenes are built from a seed (``scene_spec``) as plain-Python descriptions (``SceneSpec``: a
camera, an optional room interior, an optional ground plane, yaw-rotated solids (boxes, vertical
cylinders, ellipsoids) and materials), then rendered in batches on any torch device
(``render_specs``). The same code runs on CPU and CUDA; the scene layout comes from numpy and is
identical on every device; float rounding and the sensor-noise pattern (a torch generator seeded
per frame) differ between devices. Rendering is deterministic for a given device.

World frame: x right, y up, z forward (metres); the ground / floor is y = 0. Camera frame: OpenCV
(x right, y down, z forward); pixel centres at integer coordinates. Every camera ray is
``R @ ((u - cx) / fx, (v - cy) / fy, 1)``, so the ray parameter of a hit IS the planar depth z.
Sky (no hit) is ``+inf``.

Boxes are tested against camera rays only where their screen-space bounding box (near-clipped at
``NEAR_M``) overlaps 16x16 pixel tiles, so the cost follows the screen area the boxes cover, not
their number. Sun shadows are cast by boxes (rays from visible points towards the sun, culled the
same way with the screen bounding box of each box's shadow volume down to the floor).

Conventions for explicit scenes (tests): boxes are ``Box(centre_m, size_m, yaw_rad, material)``
with ``size_m`` the full extents along the box's own x, y, z axes and ``world = centre +
R_y(yaw) @ local``, ``R_y = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``. A camera with yaw 0 looks along
+z; positive yaw turns it towards +x; positive pitch looks up. A camera inside a box does not see
that box (no back faces).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.textures import PATTERN_ID, PATTERNS, texture_atlas

TILE_PX = 16
"""Side of the square screen tiles used to cull boxes [px]."""

NEAR_M = 0.05
"""Near clipping depth for box culling [m]; generated scenes keep boxes farther than 0.2 m."""

KINDS = ('indoor', 'outdoor')
SHAPES = ('box', 'cylinder', 'ellipsoid')
"""Solid shapes: each fills the bounding box given by ``Box.centre_m`` / ``Box.size_m``."""
_KIND_CODE = {'indoor': 1, 'outdoor': 2}
_MAX_PAIR_ELEMS = 1 << 21  # pixels tested per chunk of (box, tile) pairs
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
_INF_BITS = 0x7F800000


# ---------------------------------------------------------------------------------------------
# Scene description (plain Python; what tests build by hand and what the generators produce)
# ---------------------------------------------------------------------------------------------


@dataclass
class Camera:
    """Pinhole camera with resolution-independent intrinsics.

    At a render size of W x H pixels: ``fx = fx_w * W``, ``fy = fy_w * W``,
    ``cx = cx_w * W - 0.5``, ``cy = cy_h * H - 0.5`` (pixel centres at integer coordinates).

    Attributes:
        fx_w: Horizontal focal length / image width.
        fy_w: Vertical focal length / image width (square pixels: ``fy_w == fx_w``).
        cx_w: Principal point x / image width (0.5 = centre).
        cy_h: Principal point y / image height (0.5 = centre).
        position_m: Optical centre in the world (x, y, z) [m]; y is the height above y = 0.
        yaw_rad: Heading [rad]; 0 looks along +z, positive turns towards +x.
        pitch_rad: Elevation of the optical axis [rad]; positive looks up.
        roll_rad: Rotation about the optical axis [rad].
    """

    fx_w: float
    fy_w: float
    cx_w: float = 0.5
    cy_h: float = 0.5
    position_m: tuple[float, float, float] = (0.0, 1.5, 0.0)
    yaw_rad: float = 0.0
    pitch_rad: float = 0.0
    roll_rad: float = 0.0

    @classmethod
    def from_pixels(
        cls,
        fx_px: float,
        fy_px: float,
        cx_px: float,
        cy_px: float,
        width: int,
        height: int,
        **pose: object,
    ) -> Camera:
        """Build from pixel intrinsics at a given resolution.

        Args:
            fx_px: Focal length x [px].
            fy_px: Focal length y [px].
            cx_px: Principal point x [px].
            cy_px: Principal point y [px].
            width: Image width [px] the intrinsics refer to.
            height: Image height [px] the intrinsics refer to.
            **pose: ``position_m``, ``yaw_rad``, ``pitch_rad``, ``roll_rad``.

        Returns:
            The camera.
        """
        return cls(
            fx_px / width, fy_px / width, (cx_px + 0.5) / width, (cy_px + 0.5) / height, **pose
        )

    def intrinsics(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) [px] at ``height`` x ``width``."""
        return (
            self.fx_w * width,
            self.fy_w * width,
            self.cx_w * width - 0.5,
            self.cy_h * height - 0.5,
        )

    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation (3x3): world_dir = R @ camera_dir (OpenCV camera axes)."""
        cy, sy = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        cp, sp = math.cos(self.pitch_rad), math.sin(self.pitch_rad)
        cr, sr = math.cos(self.roll_rad), math.sin(self.roll_rad)
        r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        flip = np.diag([1.0, -1.0, 1.0])  # camera y down -> world y up
        return r_yaw @ r_pitch @ r_roll @ flip


@dataclass
class Material:
    """Surface appearance: a pattern mixed between two colours, mapped in metres.

    Attributes:
        pattern: Name from ``textures.PATTERNS``.
        period_m: (u, v) size of one pattern tile on the surface [m].
        colour_a: Linear RGB in [0, 1] where the pattern is 0.
        colour_b: Linear RGB in [0, 1] where the pattern is 1.
        fit: Map one tile exactly onto each vertical box face (doors, windows, vehicle glass);
            top and bottom faces then show ``colour_a``.
        offset: (u, v) pattern offset [tiles].
        swap_uv: Exchange u and v (e.g. floor planks along z instead of x).
        emission: 0..1, share of the albedo shown regardless of lighting (windows, screens).
    """

    pattern: str = 'plain'
    period_m: tuple[float, float] = (1.0, 1.0)
    colour_a: tuple[float, float, float] = (0.5, 0.5, 0.5)
    colour_b: tuple[float, float, float] = (0.5, 0.5, 0.5)
    fit: bool = False
    offset: tuple[float, float] = (0.0, 0.0)
    swap_uv: bool = False
    emission: float = 0.0


@dataclass
class Box:
    """A box, optionally rotated about the vertical axis.

    Attributes:
        centre_m: Centre (x, y, z) in the world [m].
        size_m: Full extents along the box's own x, y, z axes [m].
        yaw_rad: Rotation about world y [rad] (``world = centre + R_y(yaw) @ local``).
        material: Index into ``SceneSpec.materials``.
        shape: ``'box'``; ``'cylinder'`` (vertical axis, elliptic section with semi-axes
            size_x / 2 and size_z / 2, flat caps); ``'ellipsoid'`` (semi-axes size / 2).
    """

    centre_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    yaw_rad: float = 0.0
    material: int = 0
    shape: str = 'box'


@dataclass
class Room:
    """The interior of an axis-aligned box (the camera is inside).

    Attributes:
        bounds_m: (x0, x1, y0, y1, z0, z1) [m]; y0 is the floor, y1 the ceiling.
        materials: Material indices (floor, ceiling, wall x0, wall x1, wall z0, wall z1).
    """

    bounds_m: tuple[float, float, float, float, float, float]
    materials: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)


@dataclass
class Ground:
    """The infinite horizontal plane y = height_m, with a road along world z at x = 0.

    Attributes:
        height_m: Plane height [m].
        road_half_width_m: Half width of the road [m] (0 = no road).
        sidewalk_m: Width of the strips beside the road [m].
        lane_width_m: Lane width for markings [m].
        markings: Paint lane markings on the road.
        materials: Material indices (road, sidewalk, verge: everything farther out).
    """

    height_m: float = 0.0
    road_half_width_m: float = 0.0
    sidewalk_m: float = 0.0
    lane_width_m: float = 3.5
    markings: bool = False
    materials: tuple[int, int, int] = (0, 0, 0)


@dataclass
class Lighting:
    """Lights, sky and camera response (colours linear RGB).

    Attributes:
        sun_dir: Direction towards the sun (world, normalised on use).
        sun_rgb: Sun irradiance on a surface facing it.
        ambient_rgb: Ambient irradiance.
        point_m: Position of an optional point light [m] (None = none).
        point_rgb: Point-light irradiance at 1 m (falls off with 1/r^2).
        sky_zenith: Sky colour overhead.
        sky_horizon: Sky colour at the horizon (also the fog colour).
        fog_per_m: Fog extinction [1/m] (0 = clear; 3 / visibility).
        exposure: Brightness gain after auto exposure.
        noise_std: Sensor noise standard deviation (in [0, 1] output units).
        clouds: Cloud cover 0..1.
        shadows: Cast sun shadows from boxes.
        vignette: Relative darkening in the image corners.
        white_balance: Per-channel gains of the camera.
        blur: Lens softness 0..1/3: weight of each neighbour in a 3-tap blur along x and y.
    """

    sun_dir: tuple[float, float, float] = (0.3, 0.8, -0.5)
    sun_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient_rgb: tuple[float, float, float] = (0.4, 0.4, 0.4)
    point_m: tuple[float, float, float] | None = None
    point_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sky_zenith: tuple[float, float, float] = (0.15, 0.3, 0.8)
    sky_horizon: tuple[float, float, float] = (0.6, 0.7, 0.85)
    fog_per_m: float = 0.0
    exposure: float = 1.0
    noise_std: float = 0.0
    clouds: float = 0.0
    shadows: bool = True
    vignette: float = 0.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 0.0


@dataclass
class SceneSpec:
    """Everything needed to render one frame.

    Attributes:
        camera: The camera.
        materials: Materials referenced by index.
        boxes: Boxes.
        room: Room interior or None.
        ground: Ground plane or None.
        lighting: Lights and camera response.
        kind: ``'indoor'``, ``'outdoor'`` or ``''``.
        seed: Seed of the per-pixel sensor noise.
    """

    camera: Camera
    materials: list[Material] = field(default_factory=lambda: [Material()])
    boxes: list[Box] = field(default_factory=list)
    room: Room | None = None
    ground: Ground | None = None
    lighting: Lighting = field(default_factory=Lighting)
    kind: str = ''
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Random scene generators
# ---------------------------------------------------------------------------------------------


def _clip01(x: float) -> float:
    # Plain Python: np.clip on a scalar costs ~4 us, and scene layout calls this ~500x a scene.
    return min(max(float(x), 0.0), 1.0)


def _lin(rgb: Sequence[float]) -> tuple[float, float, float]:
    """sRGB-ish [0, 1] -> linear."""
    r, g, b = rgb
    return _clip01(r) ** 2.2, _clip01(g) ** 2.2, _clip01(b) ** 2.2


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return _lin(colorsys.hsv_to_rgb(h % 1.0, _clip01(s), _clip01(v)))


class _Builder:
    """Collects materials and boxes while a generator lays out a scene."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.materials: list[Material] = []
        self.boxes: list[Box] = []

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def p(self, prob: float) -> bool:
        return bool(self.rng.random() < prob)

    def mat(
        self,
        pattern: str,
        period: tuple[float, float],
        a: tuple[float, float, float],
        b: tuple[float, float, float],
        **kw: object,
    ) -> int:
        off = (self.u(0, 1), self.u(0, 1)) if not kw.get('fit') else (0.0, 0.0)
        self.materials.append(Material(pattern, period, a, b, offset=off, **kw))  # type: ignore[arg-type]
        return len(self.materials) - 1

    def box(
        self,
        x: float,
        y0: float,
        z: float,
        w: float,
        h: float,
        d: float,
        mat: int,
        yaw: float = 0.0,
        shape: str = 'box',
    ) -> None:
        """Solid of bounding size (w, h, d) whose bottom is centred at (x, y0, z)."""
        self.boxes.append(Box((x, y0 + h / 2, z), (w, h, d), yaw, mat, shape))

    def group(
        self,
        x: float,
        z: float,
        yaw: float,
        parts: Sequence[tuple],
    ) -> None:
        """Solids in a local frame (lx, y0, lz, w, h, d, mat[, shape]) turned about (x, z)."""
        c, s = math.cos(yaw), math.sin(yaw)
        for lx, y0, lz, w, h, d, m, *shape in parts:
            self.box(x + c * lx + s * lz, y0, z - s * lx + c * lz, w, h, d, m, yaw, *shape)

    # ---- materials by class (metric periods) -------------------------------------------------
    def paint(self, v_lo: float = 0.55, v_hi: float = 0.95, s_hi: float = 0.3) -> int:
        h, s, v = self.u(0, 1), self.u(0, s_hi), self.u(v_lo, v_hi)
        return self.mat('plain', (3.0, 3.0), _hsv(h, s, v * 0.9), _hsv(h, s, v))

    def wood(self, pattern: str = 'wood') -> int:
        h, v = self.u(0.05, 0.11), self.u(0.3, 0.8)
        per = (
            (self.u(0.4, 1.0), self.u(0.3, 0.6))
            if pattern == 'wood'
            else (
                self.u(1.5, 3.0),
                4 * self.u(0.09, 0.2),
            )
        )
        return self.mat(pattern, per, _hsv(h, 0.6, v * 0.55), _hsv(h, 0.5, v), swap_uv=self.p(0.5))

    def fabric(self) -> int:
        h, s, v = self.u(0, 1), self.u(0.1, 0.7), self.u(0.2, 0.8)
        return self.mat('noise_fine', (self.u(0.2, 0.6),) * 2, _hsv(h, s, v * 0.8), _hsv(h, s, v))

    def solid(self, v_lo: float = 0.1, v_hi: float = 0.9, s_hi: float = 0.8) -> int:
        h, s, v = self.u(0, 1), self.u(0, s_hi), self.u(v_lo, v_hi)
        return self.mat('plain', (1.0, 1.0), _hsv(h, s, v * 0.92), _hsv(h, s, v))

    def grey(self, v_lo: float, v_hi: float, pattern: str = 'plain', period: float = 1.0) -> int:
        v = self.u(v_lo, v_hi)
        tint = self.u(0, 1)
        return self.mat(pattern, (period, period), _hsv(tint, 0.05, v * 0.6), _hsv(tint, 0.05, v))

    def bricks(self) -> int:
        h = self.u(0.0, 0.08) if self.p(0.8) else self.u(0, 1)
        s = self.u(0.3, 0.7) if self.p(0.8) else self.u(0, 0.2)
        v = self.u(0.35, 0.75)
        # brick 0.215 x 0.065 m + 10 mm joints: 4 bricks x 8 courses per tile
        k = self.u(0.9, 1.15)
        return self.mat('bricks', (0.9 * k, 0.6 * k), _hsv(h, s, v), _hsv(0.1, 0.05, 0.8))

    def tiles(self, size_lo: float, size_hi: float) -> int:
        h, s, v = self.u(0, 1), self.u(0, 0.4), self.u(0.4, 0.95)
        size = self.u(size_lo, size_hi)
        grout = _hsv(h, s * 0.3, self.u(0.3, 0.9))
        pattern = 'tiles' if self.p(0.7) else 'checker'
        n = 4 if pattern == 'tiles' else 2
        return self.mat(pattern, (n * size,) * 2, _hsv(h, s, v), grout)

    def foliage(self) -> int:
        h = self.u(0.2, 0.35) if self.p(0.85) else self.u(0.05, 0.12)
        v = self.u(0.25, 0.6)
        return self.mat('leaves', (self.u(0.8, 2.5),) * 2, _hsv(h, 0.7, v * 0.35), _hsv(h, 0.6, v))

    def facade(self) -> int:
        r = self.rng.random()
        floor_h = self.u(2.8, 3.6)
        bay = self.u(2.2, 4.5)
        glass = _hsv(self.u(0.5, 0.65), self.u(0.1, 0.4), self.u(0.15, 0.45))
        if r < 0.25:  # brick facade with windows: bricks drawn as fine noise at this scale
            wall = _hsv(self.u(0.0, 0.08), self.u(0.3, 0.6), self.u(0.35, 0.65))
        elif r < 0.5:  # glass tower
            wall = _hsv(0, 0, self.u(0.2, 0.6))
            return self.mat('facade_tall', (bay * 0.7, floor_h), wall, glass)
        else:
            wall = _hsv(self.u(0, 1), self.u(0, 0.25), self.u(0.5, 0.95))
        pattern = 'facade' if self.p(0.6) else 'facade_tall'
        return self.mat(pattern, (bay, floor_h), wall, glass)


def _near_camera(box: Box, cam: tuple[float, float, float], margin: float) -> bool:
    """Is the camera within ``margin`` of the box (or inside it)?"""
    c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
    ox, oy, oz = (cam[i] - box.centre_m[i] for i in range(3))
    lx, lz = c * ox - s * oz, s * ox + c * oz
    dx = max(abs(lx) - box.size_m[0] / 2, 0.0)
    dy = max(abs(oy) - box.size_m[1] / 2, 0.0)
    dz = max(abs(lz) - box.size_m[2] / 2, 0.0)
    return dx * dx + dy * dy + dz * dz < margin * margin


def _intrinsics(b: _Builder) -> tuple[float, float, float, float]:
    """Random normalised intrinsics: horizontal FOV 40-110 deg, principal point near centre."""
    if b.p(0.7):
        hfov = math.radians(b.u(50, 95))
    else:
        hfov = math.radians(b.u(40, 110))
    fx_w = 0.5 / math.tan(hfov / 2)
    fy_w = fx_w * (1.0 + float(np.clip(b.rng.normal(0, 0.005), -0.02, 0.02)))
    cx_w = 0.5 + float(np.clip(b.rng.normal(0, 0.015), -0.04, 0.04))
    cy_h = 0.5 + float(np.clip(b.rng.normal(0, 0.015), -0.04, 0.04))
    return fx_w, fy_w, cx_w, cy_h


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


def _indoor(rng: np.random.Generator) -> SceneSpec:  # noqa: C901
    b = _Builder(rng)
    mode = rng.choice(['room', 'hall', 'tabletop'], p=[0.55, 0.15, 0.3])
    if mode == 'hall':
        width, depth, height = b.u(8, 20), b.u(10, 24), b.u(3.2, 6.0)
    else:
        width, depth, height = b.u(2.6, 9.0), b.u(3.0, 14.0), b.u(2.3, 3.2)

    # room surfaces
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
    room = Room((0.0, width, 0.0, height, 0.0, depth), (floor, ceiling, *walls))

    # wall-mounted items and furniture against the walls; wall k: 0 x=0, 1 x=W, 2 z=0, 3 z=D
    def wall_point(k: int, s_: float, off: float) -> tuple[float, float, float]:
        """(x, z, yaw) of a point ``s_`` along wall k, ``off`` into the room."""
        if k == 0:
            return off, s_, math.pi / 2
        if k == 1:
            return width - off, s_, -math.pi / 2
        if k == 2:
            return s_, off, 0.0
        return s_, depth - off, math.pi

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
            if item == 'door':
                w, h, d, y0, m = b.u(0.8, 1.0), b.u(2.0, 2.1), 0.05, 0.0, door_mat
            elif item == 'window':
                w, h, d, y0 = b.u(0.6, 2.2), b.u(0.8, 1.6), 0.06, b.u(0.7, 1.0)
                h = min(h, height - y0 - 0.2)
                sky = _hsv(b.u(0.5, 0.62), b.u(0.05, 0.5), b.u(0.7, 1.0))
                m = b.mat('window', (1, 1), _hsv(0, 0, b.u(0.6, 0.95)), sky, fit=True)
                b.materials[m].emission = b.u(0.5, 0.95)
            elif item == 'painting':
                w, h, d, y0 = b.u(0.3, 1.2), b.u(0.3, 1.0), 0.03, b.u(1.1, 1.5)
                m = b.mat('screen', (1, 1), _hsv(b.u(0, 1), 0.5, 0.6), _hsv(0, 0, 0.1), fit=True)
                b.materials[m].colour_a = _hsv(b.u(0, 1), b.u(0.2, 0.8), b.u(0.3, 0.9))
                b.materials[m].colour_b = _hsv(b.u(0, 1), b.u(0.1, 0.5), b.u(0.05, 0.8))
            elif item == 'cabinet':
                w, h, d, y0 = b.u(0.4, 1.6), b.u(0.7, 2.1), b.u(0.35, 0.6), 0.0
                body = b.wood() if b.p(0.5) else b.solid(0.3, 0.95, 0.3)
                col = b.materials[body].colour_b
                m = b.mat('drawers', (1, 1), col, _hsv(0, 0, 0.1), fit=True)
            elif item == 'shelf':
                w, h, d, y0 = b.u(0.6, 1.2), b.u(1.0, 2.2), b.u(0.25, 0.4), 0.0
                m = b.wood()
                x, z, yaw = wall_point(k, s_ + w / 2, d / 2)
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
                s_ += w + b.u(0.05, 0.5)
                continue
            else:  # sofa
                w, d = b.u(1.4, 2.4), b.u(0.8, 1.0)
                m = b.fabric()
                x, z, yaw = wall_point(k, s_ + w / 2, d / 2)
                parts = [(0.0, 0.0, 0.0, w, 0.45, d, m), (0.0, 0.45, -d / 2 + 0.1, w, 0.4, 0.2, m)]
                parts += [(sx * (w / 2 - 0.1), 0.45, 0.0, 0.2, 0.2, d, m) for sx in (-1, 1)]
                b.group(x, z, yaw, parts)
                s_ += w + b.u(0.05, 0.5)
                continue
            if s_ + w > length:
                break
            x, z, yaw = wall_point(k, s_ + w / 2, d / 2)
            b.box(x, y0, z, w, h, d, m, yaw)
            s_ += w + b.u(0.05, 0.5)

    # free-standing furniture
    def free_xz(margin: float) -> tuple[float, float]:
        return b.u(margin, max(width - margin, margin + 0.01)), b.u(
            margin, max(depth - margin, margin + 0.01)
        )

    n_free = int(rng.integers(1, 4 if mode != 'hall' else 9))
    for _ in range(n_free):
        item = rng.choice(
            ['table', 'bed', 'crate', 'plant', 'person', 'pillar'],
            p=[0.4, 0.1, 0.2, 0.12, 0.1, 0.08],
        )
        x, z = free_xz(0.8)
        yaw = b.u(-0.2, 0.2) + (math.pi / 2 if b.p(0.5) else 0.0)
        if item == 'table':
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

    # camera
    fx_w, fy_w, cx_w, cy_h = _intrinsics(b)
    if mode == 'tabletop':
        tw, td = b.u(0.8, 2.0), b.u(0.6, 1.2)
        th = b.u(0.65, 0.95)
        tx, tz = free_xz(min(1.2, width / 2 - 0.05, depth / 2 - 0.05))
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
    else:
        cam_x, cam_z = b.u(0.3, width - 0.3), b.u(0.3, depth - 0.3)
        r = rng.random()
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
    lamp = b.mat('plain', (1, 1), _hsv(0.1, 0.05, 1.0), _hsv(0.1, 0.05, 1.0), emission=1.0)
    for _ in range(int(rng.integers(0, 5))):  # ceiling light panels / fittings
        lw, ld = (b.u(0.3, 0.6),) * 2 if b.p(0.5) else (b.u(1.0, 1.5), b.u(0.15, 0.6))
        lx, lz = free_xz(0.5)
        b.box(lx, height - 0.04, lz, lw, 0.04, ld, lamp, 0.0 if b.p(0.8) else math.pi / 2)
    roll = float(np.clip(rng.normal(0, math.radians(2)), -0.09, 0.09))
    cam = Camera(fx_w, fy_w, cx_w, cy_h, (cam_x, cam_y, cam_z), yaw, pitch, roll)
    b.boxes = [bx for bx in b.boxes if not _near_camera(bx, cam.position_m, 0.2)]

    # lights: window sun, ceiling light, ambient
    warm = b.u(-0.08, 0.08)
    amb = b.u(0.12, 0.35)
    elev, az = b.u(0.4, 1.2), b.u(0, 2 * math.pi)
    light = Lighting(
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
    return SceneSpec(
        cam, b.materials, b.boxes, room=room, ground=None, lighting=light, kind='indoor'
    )


def _person(b: _Builder, x: float, z: float, yaw: float) -> None:
    h = b.u(1.5, 1.95)
    cloth = b.fabric() if b.p(0.6) else b.solid(0.05, 0.8)
    legs = b.solid(0.05, 0.5, 0.5)
    skin = _hsv(b.u(0.02, 0.1), b.u(0.2, 0.6), b.u(0.3, 0.9))
    head = b.mat('plain', (1, 1), skin, skin)
    w = b.u(0.38, 0.5)
    b.group(
        x,
        z,
        yaw,
        [
            (0.0, 0.0, 0.0, w * 0.8, h * 0.47, 0.22, legs),
            (0.0, h * 0.47, 0.0, w, h * 0.4, 0.26, cloth),
            (0.0, h * 0.865, 0.0, 0.17, h * 0.135, 0.21, head, 'ellipsoid'),
        ],
    )


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


def _outdoor(rng: np.random.Generator) -> SceneSpec:  # noqa: C901
    b = _Builder(rng)
    mode = rng.choice(['street', 'field', 'plaza'], p=[0.5, 0.3, 0.2])
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

    fx_w, fy_w, cx_w, cy_h = _intrinsics(b)
    r = rng.random()
    cam_y = b.u(1.2, 1.8) if r < 0.5 else (b.u(0.3, 1.2) if r < 0.75 else b.u(1.8, 4.0))
    pitch = math.radians(b.u(-12, 6) - (cam_y - 1.5) * 1.5)
    cam_x = 0.0
    yaw = float(rng.normal(0, math.radians(8)))
    r = rng.random()
    if r < 0.15:
        yaw += (1 if b.p(0.5) else -1) * math.radians(b.u(20, 60))
    elif r < 0.22:
        yaw += (1 if b.p(0.5) else -1) * math.radians(b.u(60, 100))

    if mode == 'street':
        lanes = int(rng.integers(1, 7))
        lane_w = b.u(2.8, 3.7)
        road_hw = lanes * lane_w / 2
        side = b.u(1.5, 5.0)
        ground = Ground(0.0, road_hw, side, lane_w, b.p(0.85), (asphalt, paving, grass))
        cam_x = -road_hw + lane_w * (int(rng.integers(0, lanes)) + 0.5) + b.u(-0.4, 0.4)
        if b.p(0.2):
            cam_x = (1 if b.p(0.5) else -1) * (road_hw + side / 2)
        edge = road_hw + side
        for sgn in (-1, 1):
            if b.p(0.9):
                zz = b.u(-40, -5)
                z_end = b.u(100, 350)
                setback = b.u(0.0, 4.0) if b.p(0.7) else b.u(4.0, 20.0)
                while zz < z_end:
                    length = b.u(8, 40)
                    bd = b.u(10, 30)
                    floors = 1 + int(rng.geometric(0.25))
                    h = min(floors, 15) * b.u(2.8, 3.6) + b.u(0.0, 2.0)
                    if b.p(0.05):
                        h = b.u(50, 120)
                    _building(b, sgn * (edge + setback + bd / 2), zz + length / 2, bd, h, length)
                    zz += length + (b.u(0, 6) if b.p(0.8) else b.u(10, 40))
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
    elif mode == 'field':
        if b.p(0.5):
            road_hw = b.u(1.2, 3.0)
            ground = Ground(0.0, road_hw, b.u(0.3, 1.5), 3.0, False, (gravel, dirt, grass))
            cam_x = b.u(-road_hw, road_hw) * 0.7
        else:
            ground = Ground(0.0, 0.0, 0.0, 3.0, False, (grass, grass, grass if b.p(0.6) else dirt))
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
    else:  # plaza / car park
        ground = Ground(
            0.0, 0.0, 0.0, 3.0, False, (paving, paving, asphalt if b.p(0.5) else paving)
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

    roll = float(np.clip(rng.normal(0, math.radians(1.5)), -0.07, 0.07))
    cam = Camera(fx_w, fy_w, cx_w, cy_h, (cam_x, cam_y, 0.0), yaw, pitch, roll)
    b.boxes = [bx for bx in b.boxes if not _near_camera(bx, cam.position_m, 0.3)]

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
    light = Lighting(
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
    return SceneSpec(
        cam, b.materials, b.boxes, room=None, ground=ground, lighting=light, kind='outdoor'
    )


def scene_spec(kind: str, seed: int) -> SceneSpec:
    """Generate the random scene ``seed`` of ``kind``.

    Args:
        kind: ``'indoor'`` or ``'outdoor'``.
        seed: Non-negative integer; every (kind, seed) is a different, reproducible scene.

    Returns:
        The scene description (independent of resolution and device).
    """
    if kind not in _KIND_CODE:
        raise ValueError(f"kind must be 'indoor' or 'outdoor', got {kind!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    rng = np.random.default_rng([seed, _KIND_CODE[kind], 0x5EED])
    spec = _indoor(rng) if kind == 'indoor' else _outdoor(rng)
    spec.seed = int(rng.integers(0, 2**31 - 1))
    return spec


# ---------------------------------------------------------------------------------------------
# Packing specs into tensors
# ---------------------------------------------------------------------------------------------

_M_FIELDS = 14  # pattern, pu, pv, fit, a(3), b(3), ou, ov, swap, emission
_B_FIELDS = 9  # centre (3), half size (3), yaw, material, shape


_LIGHT_VECTORS = ('sun_dir', 'sun_rgb', 'ambient_rgb', 'point_m', 'point_rgb', 'sky_zenith',
                  'sky_horizon', 'white_balance')
_LIGHT_SCALARS = ('fog_per_m', 'exposure', 'noise_std', 'clouds', 'shadows', 'vignette', 'blur')


@dataclass
class PackedScenes:
    """A batch of scene layouts as padded arrays: what the renderer reads.

    ``pack_scenes`` builds it with numpy arrays on the host; ``to`` moves it to a torch device.
    Packed numpy arrays unpickle much faster than ``SceneSpec`` objects (0.3 ms against 130 ms
    for 128 scenes on one core), which is why ``scene_workers`` processes send batches in this
    form.
    Arrays are padded to the largest scene of the batch (``n_boxes`` / ``n_mats`` hold each
    scene's own counts, so a slice packs exactly as its scenes alone would).
    """

    height: int  # image height the intrinsics are for [px]
    width: int  # image width [px]
    k: np.ndarray | torch.Tensor  # [B, 4] fx, fy, cx, cy [px]
    rot: np.ndarray | torch.Tensor  # [B, 3, 3] camera -> world
    origin: np.ndarray | torch.Tensor  # [B, 3] camera position [m]
    mats: np.ndarray | torch.Tensor  # [B, M, 14]
    boxes: np.ndarray | torch.Tensor  # [B, N, 9] cx, cy, cz, hx, hy, hz, yaw, material, shape
    box_valid: np.ndarray | torch.Tensor  # [B, N] bool
    room: np.ndarray | torch.Tensor  # [B, 6]
    room_mat: np.ndarray | torch.Tensor  # [B, 6] int64
    has_room: np.ndarray | torch.Tensor  # [B] bool
    ground: np.ndarray | torch.Tensor  # [B, 4] y, road_hw, side, lane_w
    ground_mat: np.ndarray | torch.Tensor  # [B, 3] int64
    has_ground: np.ndarray | torch.Tensor  # [B] bool
    markings: np.ndarray | torch.Tensor  # [B] bool
    floor_y: np.ndarray | torch.Tensor  # [B] shadow volumes end here
    light: dict[str, np.ndarray | torch.Tensor]
    seed: np.ndarray | torch.Tensor  # [B] int64
    n_boxes: np.ndarray  # [B] boxes per scene (host only)
    n_mats: np.ndarray  # [B] materials per scene (host only)
    noise_seeds: tuple[int, ...]  # seed of each frame's sensor-noise generator
    kinds: tuple[str, ...]  # each scene's kind ('indoor', 'outdoor' or '')

    _BATCHED = ('k', 'rot', 'origin', 'mats', 'boxes', 'box_valid', 'room', 'room_mat',
                'has_room', 'ground', 'ground_mat', 'has_ground', 'markings', 'floor_y', 'seed')

    def __len__(self) -> int:
        return len(self.kinds)

    def select(self, lo: int, hi: int) -> PackedScenes:
        """Scenes ``lo:hi`` (host arrays), padded only as far as those scenes need."""
        n_box = max(1, int(self.n_boxes[lo:hi].max()))
        n_mat = max(1, int(self.n_mats[lo:hi].max()))
        fields_ = {name: getattr(self, name)[lo:hi] for name in self._BATCHED}
        fields_['mats'] = np.ascontiguousarray(fields_['mats'][:, :n_mat])
        fields_['boxes'] = np.ascontiguousarray(fields_['boxes'][:, :n_box])
        fields_['box_valid'] = np.ascontiguousarray(fields_['box_valid'][:, :n_box])
        return PackedScenes(
            height=self.height, width=self.width, **fields_,
            light={key: v[lo:hi] for key, v in self.light.items()},
            n_boxes=self.n_boxes[lo:hi], n_mats=self.n_mats[lo:hi],
            noise_seeds=self.noise_seeds[lo:hi], kinds=self.kinds[lo:hi])

    def to(self, device: torch.device) -> PackedScenes:
        """The same scenes with every array as a tensor on ``device``."""
        def t(x: np.ndarray | torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(x).to(device)

        return PackedScenes(
            height=self.height, width=self.width,
            **{name: t(getattr(self, name)) for name in self._BATCHED},
            light={key: t(v) for key, v in self.light.items()},
            n_boxes=self.n_boxes, n_mats=self.n_mats, noise_seeds=self.noise_seeds,
            kinds=self.kinds)


def pack_scenes(specs: Sequence[SceneSpec], height: int, width: int) -> PackedScenes:
    """Pack scene descriptions into padded host arrays for ``render_specs``.

    Args:
        specs: Scenes (at least one).
        height: Image height [px] (the intrinsics depend on it).
        width: Image width [px].

    Returns:
        The packed batch (numpy arrays).

    Raises:
        ValueError: A material has an unknown pattern, or a box an unknown shape or material.
    """
    if not specs:
        raise ValueError('no scenes to pack')
    nb = len(specs)
    n_box = max(1, max(len(s.boxes) for s in specs))
    n_mat = max(1, max(len(s.materials) for s in specs))
    k = np.zeros((nb, 4), np.float64)
    rot = np.zeros((nb, 3, 3), np.float64)
    origin = np.zeros((nb, 3), np.float64)
    mats = np.zeros((nb, n_mat, _M_FIELDS), np.float32)
    boxes = np.zeros((nb, n_box, _B_FIELDS), np.float32)
    box_valid = np.zeros((nb, n_box), bool)
    room = np.zeros((nb, 6), np.float32)
    room_mat = np.zeros((nb, 6), np.int64)
    has_room = np.zeros(nb, bool)
    ground = np.zeros((nb, 4), np.float32)
    ground_mat = np.zeros((nb, 3), np.int64)
    has_ground = np.zeros(nb, bool)
    markings = np.zeros(nb, bool)
    floor_y = np.zeros(nb, np.float32)
    light = {key: np.zeros((nb, 3), np.float32) for key in _LIGHT_VECTORS}
    light.update({key: np.zeros(nb, np.float32) for key in _LIGHT_SCALARS})
    seed = np.zeros(nb, np.int64)
    for i, s in enumerate(specs):
        k[i] = s.camera.intrinsics(height, width)
        rot[i] = s.camera.rotation()
        origin[i] = s.camera.position_m
        for j, m in enumerate(s.materials):
            if m.pattern not in PATTERN_ID:
                raise ValueError(f'unknown pattern {m.pattern!r}')
            mats[i, j] = (
                PATTERN_ID[m.pattern],
                m.period_m[0],
                m.period_m[1],
                float(m.fit),
                *m.colour_a,
                *m.colour_b,
                *m.offset,
                float(m.swap_uv),
                m.emission,
            )
        for j, bx in enumerate(s.boxes):
            if not 0 <= bx.material < len(s.materials):
                raise ValueError(f'box {j} uses material {bx.material} of {len(s.materials)}')
            if bx.shape not in SHAPES:
                raise ValueError(f'box {j}: shape must be one of {SHAPES}, got {bx.shape!r}')
            boxes[i, j] = (
                *bx.centre_m,
                *(0.5 * x for x in bx.size_m),
                bx.yaw_rad,
                bx.material,
                SHAPES.index(bx.shape),
            )
            box_valid[i, j] = min(bx.size_m) > 0
        if s.room is not None:
            has_room[i] = True
            room[i] = s.room.bounds_m
            room_mat[i] = s.room.materials
            floor_y[i] = s.room.bounds_m[2]
        if s.ground is not None:
            g = s.ground
            has_ground[i] = True
            ground[i] = (g.height_m, g.road_half_width_m, g.sidewalk_m, g.lane_width_m)
            ground_mat[i] = g.materials
            markings[i] = g.markings
            floor_y[i] = g.height_m
        lt = s.lighting
        for key in _LIGHT_VECTORS:
            val = getattr(lt, key)
            light[key][i] = val if val is not None else (0.0, 0.0, 0.0)
        for key in _LIGHT_SCALARS:
            light[key][i] = float(getattr(lt, key))
        sd = np.asarray(lt.sun_dir, np.float64)
        light['sun_dir'][i] = sd / max(np.linalg.norm(sd), 1e-9)
        if lt.point_m is None:
            light['point_rgb'][i] = 0.0
        seed[i] = int(s.seed) % (2**31)
    return PackedScenes(
        height=height, width=width,
        k=k.astype(np.float32), rot=rot.astype(np.float32), origin=origin.astype(np.float32),
        mats=mats, boxes=boxes, box_valid=box_valid, room=room, room_mat=room_mat,
        has_room=has_room, ground=ground, ground_mat=ground_mat, has_ground=has_ground,
        markings=markings, floor_y=floor_y, light=light, seed=seed,
        n_boxes=np.array([len(s.boxes) for s in specs]),
        n_mats=np.array([len(s.materials) for s in specs]),
        noise_seeds=tuple(int(s.seed) for s in specs), kinds=tuple(s.kind for s in specs))


# ---------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------


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


@torch.no_grad()
def render_specs(  # noqa: C901
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
    atlas = texture_atlas(dev)
    nb = len(packed)
    tp = TILE_PX
    ty, tx = -(-height // tp), -(-width // tp)
    tt = tp * tp
    npx = ty * tx * tt

    # pixel coordinates in tile order: [ty, tx, tp, tp] flattened
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
    inf = torch.full_like(dx, math.inf)

    # --- background: room interior (exit faces) and ground plane ----------------------------
    rm = pk.room
    t_room = inf
    face = torch.zeros_like(dx, dtype=torch.long)
    if bool(pk.has_room.any()):
        # A ray parallel to a pair of faces (d = +-0, e.g. the centre pixel of an unrotated
        # camera) never exits through them: +inf, not the -inf of (lo - o) / +0.
        tx_ = torch.where(dx != 0, (torch.where(dx > 0, rm[:, 1:2], rm[:, 0:1]) - ox) / dx, inf)
        ty_ = torch.where(dy != 0, (torch.where(dy > 0, rm[:, 3:4], rm[:, 2:3]) - oy) / dy, inf)
        tz_ = torch.where(dz != 0, (torch.where(dz > 0, rm[:, 5:6], rm[:, 4:5]) - oz) / dz, inf)
        fx_ = torch.where(dx > 0, 3, 2)
        fy_ = torch.where(dy > 0, 1, 0)
        fz_ = torch.where(dz > 0, 5, 4)
        t_room = torch.where(tx_ < ty_, tx_, ty_)
        face = torch.where(tx_ < ty_, fx_, fy_)
        face = torch.where(tz_ < t_room, fz_, face)
        t_room = torch.where(tz_ < t_room, tz_, t_room)
        t_room = torch.where(pk.has_room[:, None] & (t_room > 0), t_room, inf)
    t_ground = inf
    if bool(pk.has_ground.any()):
        gy = pk.ground[:, 0:1]
        t_ground = (gy - oy) / dy
        t_ground = torch.where(pk.has_ground[:, None] & (dy < 0) & (oy > gy), t_ground, inf)

    # --- boxes ---------------------------------------------------------------------------
    keys = _cast_boxes(pk, (dx.reshape(-1, tt), dy.reshape(-1, tt), dz.reshape(-1, tt)), ty, tx)
    keys = keys.view(nb, npx)
    box_id = keys & 0xFFFF
    t_box = (keys >> 16).to(torch.int32).view(torch.float32)

    # surface: 0 sky, 1 room, 2 ground, 3 box
    t = torch.minimum(torch.minimum(t_room, t_ground), t_box)
    surf = torch.where(t_box <= t, 3, torch.where(t_ground <= t, 2, torch.where(t_room <= t, 1, 0)))
    surf = torch.where(torch.isinf(t), 0, surf)
    is_box, is_ground, is_room = surf == 3, surf == 2, surf == 1
    finite = surf > 0
    tf = torch.where(finite, t, torch.zeros_like(t))
    px, py, pz = ox + tf * dx, oy + tf * dy, oz + tf * dz

    # --- per-surface normal, texture coordinates [m], material -------------------------------
    zero = torch.zeros_like(dx)
    one = torch.ones_like(dx)
    # room
    r_nx = torch.where(face == 2, one, torch.where(face == 3, -one, zero))
    r_ny = torch.where(face == 0, one, torch.where(face == 1, -one, zero))
    r_nz = torch.where(face == 4, one, torch.where(face == 5, -one, zero))
    wall_x = (face == 2) | (face == 3)
    wall_z = (face == 4) | (face == 5)
    r_u = torch.where(wall_x, -r_nx * pz, torch.where(wall_z, r_nz * px, px))
    r_v = torch.where(wall_x | wall_z, py - rm[:, 2:3], pz)
    r_mat = torch.gather(pk.room_mat, 1, face)
    # ground
    ax = px.abs()
    road_hw, side = pk.ground[:, 1:2], pk.ground[:, 2:3]
    g_region = torch.where(ax < road_hw, 0, torch.where(ax < road_hw + side, 1, 2))
    g_mat = torch.gather(pk.ground_mat, 1, g_region)
    # boxes: the hit point in the winner's frame gives its face / normal / texture coordinates
    n_box = pk.boxes.shape[1]
    frame = torch.arange(nb, device=dev)[:, None]
    bp = pk.boxes.view(-1, _B_FIELDS)[frame * n_box + box_id.clamp_max(n_box - 1)]  # [B, P, 9]
    c, s = torch.cos(bp[..., 6]), torch.sin(bp[..., 6])
    lx, lz = _rotate_y(px - bp[..., 0], pz - bp[..., 2], c, s)  # local hit point [m]
    ly = py - bp[..., 1]
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
    b_nx, b_nz = c * lnx + s * lnz, -s * lnx + c * lnz  # local -> world
    r_mean = 0.5 * (hx + hz)
    arc = torch.atan2(lx, lz) * r_mean
    b_u = torch.where(
        axis == 0,
        hz - sq(qx) * lz,
        torch.where(axis == 2, hx + sq(qz) * lx, torch.where(axis == 1, lx + hx, arc)),
    )
    b_v = torch.where(axis == 1, lz + hz, ly + hy)
    b_fit_u = torch.where(axis == 0, 2 * hz, torch.where(axis == 3, 2 * math.pi * r_mean, 2 * hx))
    b_fit_v = torch.where(axis == 1, 2 * hz, 2 * hy)
    b_mat = bp[..., 7].long()

    nx = torch.where(is_box, b_nx, torch.where(is_room, r_nx, zero))
    ny = torch.where(is_box, lny, torch.where(is_room, r_ny, one))
    nz = torch.where(is_box, b_nz, torch.where(is_room, r_nz, zero))
    tu = torch.where(is_box, b_u, torch.where(is_room, r_u, px))
    tv = torch.where(is_box, b_v, torch.where(is_room, r_v, pz))
    mat_id = torch.where(is_box, b_mat, torch.where(is_room, r_mat, g_mat))
    mp = pk.mats.view(-1, _M_FIELDS)[frame * pk.mats.shape[1] + mat_id]  # [B, P, 14]
    fit = (mp[..., 3] > 0) & is_box
    pattern = mp[..., 0].long()
    top = is_box & (axis == 1)  # roofs / table tops: no windows or doors on them
    pattern = torch.where(top, _TOP_PATTERN.to(dev)[pattern], pattern)
    per_u = torch.where(fit, b_fit_u, mp[..., 1])
    per_v = torch.where(fit, b_fit_v, mp[..., 2])
    swap = mp[..., 12] > 0
    tu, tv = torch.where(swap, tv, tu), torch.where(swap, tu, tv)
    per_u, per_v = torch.where(swap, per_v, per_u), torch.where(swap, per_u, per_v)
    tex_u = tu / per_u + mp[..., 10]
    tex_v = tv / per_v + mp[..., 11]

    # mip level from the pixel footprint on the surface
    ray_len = torch.sqrt(dx * dx + dy * dy + dz * dz)
    cos_inc = ((nx * dx + ny * dy + nz * dz).abs() / ray_len).clamp_min(0.02)
    foot_m = tf / fx / cos_inc.sqrt()
    level = torch.log2((foot_m / torch.minimum(per_u, per_v) * atlas.tile_px).clamp_min(1.0))

    # sky: clouds on a plane 1 km up (sampled with the same atlas call)
    sky = ~finite
    el = (dy / ray_len).clamp_min(0.02)
    cloud_scale = 3000.0
    cu = dx / ray_len / el * (1000.0 / cloud_scale) + pk.seed[:, None].float() * 0.001
    cv = dz / ray_len / el * (1000.0 / cloud_scale)
    cl_level = torch.log2((1000.0 / el / fx / el / cloud_scale * atlas.tile_px).clamp_min(1))
    pattern = torch.where(sky, PATTERN_ID['clouds'], pattern)
    tex_u = torch.where(sky, cu, tex_u)
    tex_v = torch.where(sky, cv, tex_v)
    level = torch.where(sky, cl_level, level)
    pval = atlas.sample(pattern, tex_u, tex_v, level)[..., None]  # [B, P, 1]
    albedo = mp[..., 4:7] * (1 - pval) + mp[..., 7:10] * pval  # [B, P, 3]

    # lane markings (road pixels): dashed lane lines and solid edge lines, 12 cm wide
    if bool(pk.markings.any()):
        lane_w = pk.ground[:, 3:4]
        on_road = is_ground & (ax < road_hw) & pk.markings[:, None]
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
        albedo = albedo * (1 - paint) + 0.7 * paint

    # --- lighting ----------------------------------------------------------------------------
    lt = pk.light
    sun = lt['sun_dir'][:, None, :]  # [B, 1, 3]
    ndl = (
        nx[..., None] * sun[..., 0:1]
        + ny[..., None] * sun[..., 1:2]
        + nz[..., None] * sun[..., 2:3]
    ).clamp_min(0)
    rs = lambda v: v.reshape(-1, tt)  # noqa: E731
    shadow = _cast_shadows(
        pk, (rs(torch.where(finite, px, inf)), rs(py), rs(pz)), (rs(nx), rs(ny), rs(nz)), ty, tx
    ).view(nb, npx, 1)
    irr = lt['ambient_rgb'][:, None, :] * (0.8 + 0.2 * ny[..., None])
    irr = irr + lt['sun_rgb'][:, None, :] * ndl * (1 - shadow)
    # point light (inverse square)
    lx_ = lt['point_m'][:, 0:1] - px
    ly_ = lt['point_m'][:, 1:2] - py
    lz_ = lt['point_m'][:, 2:3] - pz
    r2 = (lx_ * lx_ + ly_ * ly_ + lz_ * lz_).clamp_min(0.5)  # a lamp, not a point
    pdl = ((nx * lx_ + ny * ly_ + nz * lz_) / r2.sqrt()).clamp_min(0) / r2
    irr = irr + lt['point_rgb'][:, None, :] * pdl[..., None]
    emis = mp[..., 13:14]
    rgb = albedo * (irr * (1 - emis) + 1.5 * emis)

    # fog (outdoors)
    dist = tf * ray_len
    fog = 1 - torch.exp(-lt['fog_per_m'][:, None] * dist)
    rgb = rgb * (1 - fog[..., None]) + lt['sky_horizon'][:, None, :] * fog[..., None]

    # sky colour with sun glow and clouds
    e = (dy / ray_len).clamp(-1, 1)
    grad = e.clamp(0, 1).pow(0.6)[..., None]
    sky_rgb = lt['sky_horizon'][:, None, :] * (1 - grad) + lt['sky_zenith'][:, None, :] * grad
    cos_sun = (dx * sun[..., 0] + dy * sun[..., 1] + dz * sun[..., 2]) / ray_len
    glow = (0.25 * cos_sun.clamp_min(0).pow(64) + 2.0 * (cos_sun > 0.9995).float())[..., None]
    sky_rgb = sky_rgb + glow * lt['sun_rgb'][:, None, :].clamp(max=1.0)
    cloud = pval * lt['clouds'][:, None, None] * (e[..., None] / 0.25).clamp(0, 1)
    sky_rgb = sky_rgb * (1 - cloud) + cloud * 0.9
    rgb = torch.where(sky[..., None], sky_rgb, rgb)

    # camera: auto exposure, white balance, vignette, gamma, noise
    lum = rgb.mean(-1)
    gain = lt['exposure'][:, None] * 0.18 / lum.mean(1, keepdim=True).clamp_min(1e-4)
    rgb = rgb * gain[..., None] * lt['white_balance'][:, None, :]
    rn = ((uu[None] - cx) ** 2 + (vv[None] - cy) ** 2) / (0.25 * (width**2 + height**2))
    rgb = rgb * (1 - lt['vignette'][:, None] * rn)[..., None]
    rgb = rgb.clamp(0, 1).pow(1 / 2.2)
    noise = torch.empty_like(rgb)
    for i in range(nb):  # per-frame generator: reproducible per (seed, device)
        gen = torch.Generator(device=dev).manual_seed(pk.noise_seeds[i])
        torch.rand(noise[i].shape, generator=gen, device=dev, out=noise[i])
    rgb = rgb + (lt['noise_std'] * math.sqrt(12.0))[:, None, None] * (noise - 0.5)
    img = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)  # [B, P, 3]

    def untile(x: torch.Tensor) -> torch.Tensor:  # [B, P, C] -> [B, C, H, W]
        ch = x.shape[-1]
        x = x.view(nb, ty, tx, tp, tp, ch).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(nb, ch, ty * tp, tx * tp)[:, :, :height, :width].contiguous()

    image = untile(img)
    blur = lt['blur'].clamp(0.0, 1.0 / 3.0)
    if bool((blur > 0).any()):  # lens softness (the image only; depth stays exact)
        wgt = blur[:, None, None, None]
        x = image.float()
        xp = torch.nn.functional.pad(x, (1, 1, 1, 1), mode='replicate')
        x = (1 - 2 * wgt) * xp[..., 1:-1, 1:-1] + wgt * (xp[..., 1:-1, :-2] + xp[..., 1:-1, 2:])
        xp = torch.nn.functional.pad(x, (0, 0, 1, 1), mode='replicate')
        x = (1 - 2 * wgt) * x + wgt * (xp[..., :-2, :] + xp[..., 2:, :])
        image = (x + 0.5).clamp(0, 255).to(torch.uint8)
    depth = torch.where(finite, t, inf)
    return {
        'image': image,
        'depth_m': untile(depth[..., None]),
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
