"""Scene descriptions: plain Python, what tests build by hand and what the generators produce.

World frame: x right, y up, z forward (metres); the ground / floor is y = 0. Camera frame: OpenCV
(x right, y down, z forward); pixel centres at integer coordinates.

Conventions for explicit scenes (tests): boxes are ``Box(centre_m, size_m, yaw_rad, material)``
with ``size_m`` the full extents along the box's own x, y, z axes and ``world = centre +
R_y(yaw) @ local``, ``R_y = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``. A camera with yaw 0 looks along
+z; positive yaw turns it towards +x; positive pitch looks up. A camera inside a box does not see
that box (no back faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KINDS = ('indoor', 'outdoor')
SHAPES = ('box', 'cylinder', 'ellipsoid')
"""Solid shapes: each fills the bounding box given by ``Box.centre_m`` / ``Box.size_m``."""


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
