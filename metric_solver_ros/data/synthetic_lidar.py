"""A robot's sensors in the synthetic world: a spinning LiDAR beside the camera, a world scale.

The scanner model (``LidarScanner``): ``rings`` beams at elevations evenly spaced over
``elevation_deg`` of the LiDAR's frame (REP 103: x forward, y left, z up), each sampled every
``azimuth_step_deg`` over 360 degrees; a return is the nearest surface along the beam within
``range_m`` (none for sky and beyond). The LiDAR sits at ``offset_m`` in the camera's optical
frame, turned by ``rpy_deg`` from an upright mount (x along the optical axis).

How a scan is made (:func:`scan`), exactly where the camera looks:

- **In the camera's view** the points are the camera's own pixels: every pixel's rendered
  depth is back-projected (an exact surface point), moved into the LiDAR frame, and a pixel
  becomes a return of ring ``r`` at azimuth bin ``b`` when its elevation seen from the LiDAR is
  within half a pixel of ring ``r`` (the nearest such pixel per bin: a z-buffer). So every point
  that lands in the image lands on a pixel centre with exactly the rendered depth (the analytic
  test of the projection), and the scan shows only surfaces the camera sees.
- **Outside the camera's view** the points come from four 90-degree views rendered from the
  LiDAR's origin (the same ray caster), sampled the same way; those that would land in the
  image are dropped (the camera's pixels cover that part).

Beams are thereby quantised to pixel centres (at most half a pixel off their ring), which a
real LiDAR's beam divergence exceeds. ``scale_scene`` multiplies every length of a scene by a
factor: the image stays (nearly) the same and metric depth scales, a scene family a model
trained at scale 1 gets wrong by the factor (what ``metric-solver finetune`` must fix).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metric_solver_ros.data.sample import Sample
from metric_solver_ros.lidar import CameraModel, transform_points

if TYPE_CHECKING:  # torch is imported where scenes are rendered: `--help` stays light
    from metric_solver_ros.data.synthetic import SceneSpec

#: Rotation taking REP 103 body coordinates (x forward, y left, z up) to optical coordinates
#: (x right, y down, z forward): ``p_optical = R_OPTICAL_BODY @ p_body``.
R_OPTICAL_BODY = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
#: Frames of the mount written to ``/tf_static``: base_link -> camera_link -> optical frame,
#: base_link -> LiDAR frame.
BASE_FRAME = 'base_link'
CAMERA_LINK_FRAME = 'camera_link'
#: Where the camera_link sits on base_link [m] (a robot's camera at the front, 0.3 m up).
CAMERA_ON_BASE_M = (0.2, 0.0, 0.3)
#: Views rendered from the LiDAR's origin for the part of the scan the camera does not see.
VIRTUAL_VIEWS = 4


def make_transform(rotation: np.ndarray | None = None,
                   translation_m: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid transform of a 3x3 rotation (None: identity) and a translation [m]."""
    matrix = np.eye(4)
    if rotation is not None:
        matrix[:3, :3] = rotation
    matrix[:3, 3] = translation_m
    return matrix


@dataclass(frozen=True)
class LidarScanner:
    """A spinning multi-ring LiDAR mounted beside the camera (see the module docstring).

    Attributes:
        rings: Number of beams (rings).
        elevation_deg: (lowest, highest) beam elevation [deg] in the LiDAR frame.
        azimuth_step_deg: Angle between two samples of a ring [deg].
        range_m: (min, max) range of a return [m].
        offset_m: LiDAR origin in the camera's optical frame (x right, y down, z forward) [m].
        rpy_deg: Roll, pitch, yaw [deg] of the LiDAR about its own x, y, z axes (static axes,
            applied in that order) from the upright mount that looks along the optical axis.
    """

    rings: int = 16
    elevation_deg: tuple[float, float] = (-15.0, 15.0)
    azimuth_step_deg: float = 0.4
    range_m: tuple[float, float] = (0.3, 30.0)
    offset_m: tuple[float, float, float] = (0.0, -0.08, 0.05)
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        """Reject impossible scanners with a message naming the value."""
        lo, hi = self.elevation_deg
        checks = [(self.rings >= 1, f'rings must be >= 1, got {self.rings}'),
                  (-90 < lo <= hi < 90, f'elevations must satisfy -90 < lo <= hi < 90 deg, '
                                         f'got {self.elevation_deg}'),
                  (0 < self.azimuth_step_deg <= 10, f'azimuth step must be in (0, 10] deg, '
                                                    f'got {self.azimuth_step_deg}'),
                  (0 <= self.range_m[0] < self.range_m[1], f'range must be 0 <= min < max m, '
                                                           f'got {self.range_m}')]
        for ok, message in checks:
            if not ok:
                raise ValueError(f'LiDAR scanner: {message}')

    def camera_from_lidar(self) -> np.ndarray:
        """``T_camera_lidar`` (4x4): LiDAR-frame points -> camera optical frame."""
        import transforms3d.euler as te

        roll, pitch, yaw = (math.radians(v) for v in self.rpy_deg)
        rotation = R_OPTICAL_BODY @ te.euler2mat(roll, pitch, yaw, 'sxyz')
        return make_transform(rotation, self.offset_m)

    def ring_elevations_rad(self) -> np.ndarray:
        """Elevation of each ring [rad], lowest first."""
        lo, hi = self.elevation_deg
        return np.radians(np.linspace(lo, hi, self.rings))


def mount_edges(scanner: LidarScanner, optical_frame: str,
                lidar_frame: str) -> list[tuple[str, str, np.ndarray]]:
    """The ``/tf_static`` edges ``(parent, child, T_parent_child)`` of the camera + LiDAR mount.

    ``base_link -> camera_link`` (translation ``CAMERA_ON_BASE_M``), ``camera_link ->
    optical_frame`` (the REP 103 optical rotation) and ``base_link -> lidar_frame``: the LiDAR is
    found from the camera through base_link, as on a robot.
    """
    base_camera = make_transform(None, CAMERA_ON_BASE_M)
    camera_optical = make_transform(R_OPTICAL_BODY.T)
    base_lidar = base_camera @ camera_optical @ scanner.camera_from_lidar()
    return [(BASE_FRAME, CAMERA_LINK_FRAME, base_camera),
            (CAMERA_LINK_FRAME, optical_frame, camera_optical),
            (BASE_FRAME, lidar_frame, base_lidar)]


def scale_scene(spec: SceneSpec, factor: float) -> SceneSpec:
    """The scene with every length times ``factor``: same image (nearly), depth times ``factor``.

    Positions, sizes, the room, the ground's widths, texture periods and the point light scale;
    the point light's power scales by ``factor ** 2`` (1 / r^2 fall-off) and fog density by
    ``1 / factor``, so shading stays as it was. Intrinsics and angles are unchanged.
    """
    if not factor > 0:
        raise ValueError(f'world scale must be > 0, got {factor}')
    if factor == 1:
        return spec
    s = float(factor)

    def vec(values: Sequence[float]) -> tuple[float, ...]:
        return tuple(s * float(v) for v in values)

    camera = dataclasses.replace(spec.camera, position_m=vec(spec.camera.position_m))
    materials = [dataclasses.replace(m, period_m=vec(m.period_m)) for m in spec.materials]
    boxes = [dataclasses.replace(b, centre_m=vec(b.centre_m), size_m=vec(b.size_m))
             for b in spec.boxes]
    room = (None if spec.room is None
            else dataclasses.replace(spec.room, bounds_m=vec(spec.room.bounds_m)))
    ground = spec.ground
    if ground is not None:
        ground = dataclasses.replace(
            ground, height_m=s * ground.height_m, road_half_width_m=s * ground.road_half_width_m,
            sidewalk_m=s * ground.sidewalk_m, lane_width_m=s * ground.lane_width_m)
    light = spec.lighting
    light = dataclasses.replace(
        light, point_m=None if light.point_m is None else vec(light.point_m),
        point_rgb=tuple(s * s * float(v) for v in light.point_rgb),
        fog_per_m=light.fog_per_m / s)
    return dataclasses.replace(spec, camera=camera, materials=materials, boxes=boxes, room=room,
                               ground=ground, lighting=light)


def render_sample(spec: SceneSpec, height: int, width: int, name: str = '') -> Sample:
    """Render one scene description as a ``Sample`` (CPU)."""
    from metric_solver_ros.data.synthetic import render_specs

    out = render_specs([spec], height, width)
    return Sample(image=out['image'][0].permute(1, 2, 0).numpy(),
                  depth_m=out['depth_m'][0, 0].numpy(),
                  intrinsics=tuple(float(v) for v in out['intrinsics'][0]),  # type: ignore[arg-type]
                  name=name, scene=spec.kind)


def _back_project(depth_m: np.ndarray, intrinsics: Sequence[float]) -> np.ndarray:
    """Camera-frame points [N, 3] (float64) of the pixels with finite depth, row-major order."""
    fx, fy, cx, cy = intrinsics
    rows, cols = np.nonzero(np.isfinite(depth_m) & (depth_m > 0))
    z = depth_m[rows, cols].astype(np.float64)
    return np.stack([(cols - cx) / fx * z, (rows - cy) / fy * z, z], axis=1)


def _virtual_views(spec: SceneSpec, scanner: LidarScanner) -> list[tuple[np.ndarray, float]]:
    """Points [N, 3] in the LiDAR frame seen by ``VIRTUAL_VIEWS`` views from its origin.

    Returns:
        ``(points, focal length [px])`` per view.
    """
    from metric_solver_ros.data.synthetic import pack_scenes, render_specs

    fov_half = math.radians(180.0 / VIRTUAL_VIEWS + 1.0)  # 1 degree of overlap per side
    f_px = 1.0 / math.radians(scanner.azimuth_step_deg)  # a pixel per azimuth step
    width = int(math.ceil(2 * f_px * math.tan(fov_half)))
    top = max(abs(v) for v in scanner.elevation_deg) + 1.0
    height = int(math.ceil(2 * f_px * math.tan(math.radians(top)) / math.cos(fov_half)))
    k = (f_px, f_px, (width - 1) / 2, (height - 1) / 2)
    world_camera = make_transform(spec.camera.rotation(), spec.camera.position_m)
    world_lidar = world_camera @ scanner.camera_from_lidar()
    packed = pack_scenes([spec] * VIRTUAL_VIEWS, height, width)
    lidar_views = []
    for i in range(VIRTUAL_VIEWS):
        yaw = 2 * math.pi * i / VIRTUAL_VIEWS
        c, s = math.cos(yaw), math.sin(yaw)
        lidar_view = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ R_OPTICAL_BODY.T
        lidar_views.append(lidar_view)
        packed.rot[i] = world_lidar[:3, :3] @ lidar_view
        packed.origin[i] = world_lidar[:3, 3]
        packed.k[i] = k
    depth = render_specs(packed, height, width)['depth_m'][:, 0].numpy()
    return [(_back_project(depth[i], k) @ lidar_views[i].T, f_px) for i in range(VIRTUAL_VIEWS)]


def scan(spec: SceneSpec, camera_depth_m: np.ndarray, intrinsics: Sequence[float],
         scanner: LidarScanner) -> tuple[np.ndarray, np.ndarray]:
    """One LiDAR sweep of a scene whose camera rendered ``camera_depth_m`` (module docstring).

    Args:
        spec: The scene (its camera is the one that rendered ``camera_depth_m``).
        camera_depth_m: The camera's rendered planar depth [H, W] [m] (+inf sky).
        intrinsics: ``(fx, fy, cx, cy)`` [px] of that rendering.
        scanner: The LiDAR.

    Returns:
        ``(xyz_m, ring)``: float32 [N, 3] points in the LiDAR frame and uint16 [N] ring numbers.
    """
    height, width = camera_depth_m.shape
    camera_lidar = scanner.camera_from_lidar()
    lidar_camera = np.linalg.inv(camera_lidar)
    camera = CameraModel(tuple(float(v) for v in intrinsics), width, height)  # type: ignore[arg-type]
    sources = [(transform_points(lidar_camera, _back_project(camera_depth_m, intrinsics)),
                float(intrinsics[1]))]
    for points, f_px in _virtual_views(spec, scanner):
        _, _, inside = camera.project(transform_points(camera_lidar, points))
        sources.append((points[~inside], f_px))
    points = np.concatenate([p for p, _ in sources])
    tolerance = np.concatenate([np.full(len(p), 0.5 / f) for p, f in sources])  # half a pixel
    rng = np.linalg.norm(points, axis=1)
    elevation = np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1]))
    rings = scanner.ring_elevations_rad()
    spacing = (rings[-1] - rings[0]) / max(scanner.rings - 1, 1)
    ring = (np.clip(np.rint((elevation - rings[0]) / spacing), 0, scanner.rings - 1)
            if scanner.rings > 1 else np.zeros(len(points))).astype(np.int64)
    n_azimuth = int(round(360.0 / scanner.azimuth_step_deg))
    azimuth = np.arctan2(points[:, 1], points[:, 0])
    bins = np.rint(azimuth / (2 * math.pi) * n_azimuth).astype(np.int64) % n_azimuth
    keep = ((np.abs(elevation - rings[ring]) <= tolerance)
            & (rng >= scanner.range_m[0]) & (rng <= scanner.range_m[1]))
    beam = (ring * n_azimuth + bins)[keep]
    order = np.lexsort((rng[keep], beam))  # per beam, the nearest return first
    beam = beam[order]
    first = np.ones(beam.size, bool)
    first[1:] = beam[1:] != beam[:-1]
    chosen = np.nonzero(keep)[0][order][first]
    return points[chosen].astype(np.float32), ring[chosen].astype(np.uint16)


def write_lidar_bag(path: str | pathlib.Path, scenes: Iterable[SceneSpec], height: int,
                    width: int, scanner: LidarScanner, *, storage: str = 'mcap',
                    image_topic: str = '/camera/color/image_raw',
                    depth_topic: str = '/camera/depth/image_raw',
                    info_topic: str = '/camera/color/camera_info',
                    lidar_topic: str = '/lidar/points',
                    frame_id: str = 'camera_color_optical_frame',
                    lidar_frame: str = 'lidar_link', rate_hz: float = 10.0,
                    depth_encoding: str = '32FC1', compressed: bool = False,
                    start_ns: int = 1_700_000_000_000_000_000,
                    tf_edges: Sequence[tuple[str, str, np.ndarray]] | None = None) -> int:
    """Render scenes and write image, camera_info, GT depth, a LiDAR cloud and ``/tf_static``.

    Frame ``i`` is stamped ``start_ns + i / rate_hz`` on every topic (the cloud too: a scan
    taken with the image). ``/tf_static`` is written once, first, holding
    :func:`mount_edges` (or ``tf_edges``, e.g. deliberately wrong ones for tests).

    Args:
        path: Bag directory to create (must not exist).
        scenes: Scene descriptions, one per frame.
        height: Image height [px].
        width: Image width [px].
        scanner: The LiDAR.
        storage: ``'mcap'`` or ``'sqlite3'``.
        image_topic: Colour image topic (``/compressed`` appended with ``compressed``).
        depth_topic: GT depth topic (the camera's rendered depth, registered).
        info_topic: CameraInfo topic.
        lidar_topic: PointCloud2 topic.
        frame_id: The camera's optical frame (header of image, depth and info).
        lidar_frame: The cloud's frame.
        rate_hz: Frame rate [Hz].
        depth_encoding: ``'32FC1'`` or ``'16UC1'``.
        compressed: Write the image as JPEG ``CompressedImage``.
        start_ns: Stamp of the first frame [ns].
        tf_edges: ``(parent, child, T_parent_child)`` to write instead of the true mount.

    Returns:
        Number of frames written.
    """
    from metric_solver_ros.bagio import (
        BagWriter,
        camera_info_msg,
        depth_to_image_msg,
        rgb_to_compressed_msg,
        rgb_to_image_msg,
    )
    from metric_solver_ros.bagtf import TF_STATIC_TOPIC, tf_message
    from metric_solver_ros.lidar import xyz_to_cloud_msg

    if not rate_hz > 0:
        raise ValueError(f'rate must be > 0 Hz, got {rate_hz}')
    period_ns = round(1e9 / rate_hz)
    edges = list(tf_edges) if tf_edges is not None else mount_edges(scanner, frame_id,
                                                                     lidar_frame)
    count = 0
    with BagWriter(path, storage) as bag:
        for parent, child, pose in edges:  # as static broadcasters send them: one each
            bag.write(TF_STATIC_TOPIC, tf_message(pose, start_ns, parent, child), start_ns)
        for i, spec in enumerate(scenes):
            stamp_ns = start_ns + i * period_ns
            frame = render_sample(spec, height, width)
            if compressed:
                bag.write(image_topic + '/compressed',
                          rgb_to_compressed_msg(frame.image, stamp_ns, frame_id), stamp_ns)
            else:
                bag.write(image_topic, rgb_to_image_msg(frame.image, stamp_ns, frame_id),
                          stamp_ns)
            bag.write(info_topic, camera_info_msg(frame.intrinsics, width, height, stamp_ns,
                                                  frame_id), stamp_ns)
            bag.write(depth_topic, depth_to_image_msg(frame.depth_m, stamp_ns, frame_id,
                                                      depth_encoding), stamp_ns)
            xyz, ring = scan(spec, frame.depth_m, frame.intrinsics, scanner)
            bag.write(lidar_topic, xyz_to_cloud_msg(xyz, stamp_ns, lidar_frame, ring=ring),
                      stamp_ns)
            count += 1
    return count
