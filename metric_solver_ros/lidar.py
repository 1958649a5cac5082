"""LiDAR ground truth for a camera: PointCloud2 in and out, projection into the image, coverage.

A cloud's points, moved into the camera's optical frame (``bagtf.PoseLookup.transform``), are
projected with the camera's intrinsics (``conversions.camera_info_to_intrinsics``: binning and
region of interest applied as the node applies them) to the pixel whose centre is nearest
(pixel centres at integer coordinates); where several points fall on one pixel the nearest
point wins (a z-buffer). The result is a sparse depth map: planar depth [m] on the hit pixels,
NaN elsewhere (no measurement; REP 117). A ``plumb_bob`` / ``rational_polynomial`` camera_info
with distortion is projected through its distortion (OpenCV's model), so the GT matches the
raw image the model sees.

:func:`coverage_fraction` estimates how many of a cloud's points *can* land in a camera of a
given field of view, from the cloud alone (in the LiDAR's frame): the share of points inside the
best-placed camera-sized window of azimuth x elevation. A 360-degree LiDAR gives a 60-degree
camera about 60 / 360 of its points; far fewer landing in the image means wrong extrinsics or a
wrong frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metric_solver_ros.bagio import POINT_CLOUD2
from metric_solver_ros.conversions import MessageError

#: sensor_msgs/PointField datatype -> numpy kind.
POINTFIELD_DTYPES: dict[int, str] = {1: 'i1', 2: 'u1', 3: 'i2', 4: 'u2', 5: 'i4', 6: 'u4',
                                     7: 'f4', 8: 'f8'}
#: Points closer than this to the camera plane [m] are not projected (behind or at the lens).
MIN_PROJECT_DEPTH_M = 1e-3
#: Distortion models projected through their coefficients (OpenCV's 5 / 8 coefficient model).
DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial')


def cloud_to_xyz(msg: Any) -> np.ndarray:
    """The finite points of a ``sensor_msgs/PointCloud2`` as float32 [N, 3] [m].

    Fields ``x``, ``y``, ``z`` (FLOAT32 or FLOAT64) are read at their offsets; other fields
    (intensity, ring, time, ...) and padding are skipped; organised clouds (height > 1) and row
    padding (``row_step``) are handled; big-endian data is honoured. NaN / inf points (no return)
    are dropped.

    Raises:
        MessageError: A field is missing or not floating point, or the sizes do not add up.
    """
    fields = {str(f.name): f for f in msg.fields}
    missing = [name for name in ('x', 'y', 'z') if name not in fields]
    if missing:
        have = ', '.join(fields) or 'none'
        raise MessageError(f'PointCloud2 has no field {", ".join(missing)} (fields: {have})')
    height, width = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    endian = '>' if msg.is_bigendian else '<'
    formats = []
    for name in ('x', 'y', 'z'):
        f = fields[name]
        kind = POINTFIELD_DTYPES.get(int(f.datatype))
        if kind not in ('f4', 'f8') or int(getattr(f, 'count', 1) or 1) != 1:
            raise MessageError(f'PointCloud2 field {name} has datatype {int(f.datatype)}; '
                               'expected one FLOAT32 (7) or FLOAT64 (8)')
        if int(f.offset) + np.dtype(kind).itemsize > point_step:
            raise MessageError(f'PointCloud2 field {name} at offset {int(f.offset)} does not fit '
                               f'point_step {point_step}')
        formats.append(endian + kind)
    if height * width == 0:
        return np.zeros((0, 3), np.float32)
    if row_step < width * point_step:
        raise MessageError(f'PointCloud2 row_step {row_step} < width {width} x point_step '
                           f'{point_step}')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != height * row_step:
        raise MessageError(f'PointCloud2 data holds {data.size} bytes, height x row_step = '
                           f'{height * row_step}')
    rows = data.reshape(height, row_step)[:, :width * point_step]
    dtype = np.dtype({'names': ['x', 'y', 'z'], 'formats': formats,
                      'offsets': [int(fields[n].offset) for n in ('x', 'y', 'z')],
                      'itemsize': point_step})
    points = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    xyz = np.stack([points['x'], points['y'], points['z']], axis=1).astype(np.float32)
    return xyz[np.isfinite(xyz).all(axis=1)]


def xyz_to_cloud_msg(xyz_m: np.ndarray, stamp_ns: int, frame_id: str,
                     intensity: np.ndarray | None = None, ring: np.ndarray | None = None) -> Any:
    """Build an unorganised ``sensor_msgs/PointCloud2`` (rosbags type), Velodyne-like layout.

    Fields: ``x``, ``y``, ``z``, ``intensity`` (FLOAT32), ``ring`` (UINT16), padded to 24 bytes
    a point (as drivers pad to aligned strides).

    Args:
        xyz_m: Points [N, 3] [m] in ``frame_id``.
        stamp_ns: Header stamp [ns].
        frame_id: The LiDAR's frame.
        intensity: Optional [N] values (default 0).
        ring: Optional [N] ring numbers (default 0).
    """
    from metric_solver_ros.bagio import get_typestore

    types = get_typestore().types
    xyz_m = np.asarray(xyz_m, dtype=np.float32).reshape(-1, 3)
    n = xyz_m.shape[0]
    layout = np.dtype({'names': ['x', 'y', 'z', 'intensity', 'ring'],
                       'formats': ['<f4', '<f4', '<f4', '<f4', '<u2'],
                       'offsets': [0, 4, 8, 12, 16], 'itemsize': 24})
    points = np.zeros(n, dtype=layout)
    points['x'], points['y'], points['z'] = xyz_m[:, 0], xyz_m[:, 1], xyz_m[:, 2]
    points['intensity'] = 0.0 if intensity is None else intensity
    points['ring'] = 0 if ring is None else ring
    field_type = types['sensor_msgs/msg/PointField']
    fields = [field_type(name=name, offset=offset, datatype=datatype, count=1)
              for name, offset, datatype in (('x', 0, 7), ('y', 4, 7), ('z', 8, 7),
                                             ('intensity', 12, 7), ('ring', 16, 4))]
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    header = types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)
    return types[POINT_CLOUD2](
        header=header, height=1, width=n, fields=fields, is_bigendian=False,
        point_step=layout.itemsize, row_step=layout.itemsize * n,
        data=points.view(np.uint8).reshape(-1), is_dense=True)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to points [N, 3] (same dtype out as in)."""
    rotation = transform[:3, :3].astype(points.dtype)
    return points @ rotation.T + transform[:3, 3].astype(points.dtype)


@dataclass(frozen=True)
class CameraModel:
    """What projection needs of a camera: pinhole intrinsics of the image, size, distortion.

    Attributes:
        intrinsics: ``(fx, fy, cx, cy)`` [px] of the image (binning / ROI already applied).
        width: Image width [px].
        height: Image height [px].
        distortion: Distortion coefficients (OpenCV order); empty or all 0: none.
    """

    intrinsics: tuple[float, float, float, float]
    width: int
    height: int
    distortion: tuple[float, ...] = ()

    @classmethod
    def from_camera_info(cls, msg: Any) -> CameraModel:
        """The model of a ``sensor_msgs/CameraInfo`` for the images it describes (REP 104).

        Raises:
            MessageError: Bad intrinsics, or a distortion model other than
                ``DISTORTION_MODELS`` with non-zero coefficients.
        """
        from metric_solver_ros.conversions import (
            camera_info_image_size,
            camera_info_to_intrinsics,
        )

        intrinsics = camera_info_to_intrinsics(msg)
        width, height = camera_info_image_size(msg)
        d = tuple(float(v) for v in getattr(msg, 'd', ()))
        if any(d) and str(msg.distortion_model) not in DISTORTION_MODELS:
            raise MessageError(f'camera_info distortion model {str(msg.distortion_model)!r} is '
                               f'not supported for LiDAR projection (supported: '
                               f'{", ".join(DISTORTION_MODELS)}); use a rectified image and its '
                               'camera_info')
        return cls(intrinsics, width, height, d if any(d) else ())

    def scaled(self, width: int, height: int) -> CameraModel:
        """The same camera for the image resized to ``width`` x ``height`` [px]."""
        from metric_solver_ros.conversions import scale_intrinsics

        k = scale_intrinsics(self.intrinsics, (self.width, self.height), (width, height))
        return CameraModel(k, int(width), int(height), self.distortion)

    def fov_rad(self) -> tuple[float, float]:
        """Horizontal and vertical field of view [rad] of the pinhole (edges of the image)."""
        fx, fy, cx, cy = self.intrinsics
        horizontal = math.atan((cx + 0.5) / fx) + math.atan((self.width - 0.5 - cx) / fx)
        vertical = math.atan((cy + 0.5) / fy) + math.atan((self.height - 0.5 - cy) / fy)
        return horizontal, vertical

    def project(self, xyz_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates of camera-frame points.

        Returns:
            ``(u, v, inside)``: float64 [N] pixel coordinates and a bool [N] mask of the points
            in front of the camera whose nearest pixel centre lies in the image.
        """
        xyz = np.asarray(xyz_m, dtype=np.float64).reshape(-1, 3)
        fx, fy, cx, cy = self.intrinsics
        z = xyz[:, 2]
        front = z > MIN_PROJECT_DEPTH_M
        safe_z = np.where(front, z, 1.0)
        a, b = xyz[:, 0] / safe_z, xyz[:, 1] / safe_z
        if self.distortion:
            a, b, front = self._distort(a, b, front)
        u, v = fx * a + cx, fy * b + cy
        inside = (front & (u >= -0.5) & (u < self.width - 0.5)
                  & (v >= -0.5) & (v < self.height - 0.5))
        return u, v, inside

    def _distort(self, a: np.ndarray, b: np.ndarray,
                 front: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the distortion to normalised coordinates.

        Points beyond the image's own undistorted radius are dropped: the polynomial folds
        them back into the image there.
        """
        import cv2

        d = np.zeros(8)
        d[:min(8, len(self.distortion))] = self.distortion[:8]
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        fx, fy, cx, cy = self.intrinsics
        corners = np.array([[[-0.5, -0.5]], [[self.width - 0.5, -0.5]],
                            [[-0.5, self.height - 0.5]], [[self.width - 0.5, self.height - 0.5]]])
        camera = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        undistorted = cv2.undistortPoints(corners, camera, d).reshape(-1, 2)
        max_r2 = 1.1 * float((undistorted ** 2).sum(axis=1).max())
        r2 = a * a + b * b
        radial = ((1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3)
                  / (1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3))
        a_d = a * radial + 2 * p1 * a * b + p2 * (r2 + 2 * a * a)
        b_d = b * radial + p1 * (r2 + 2 * b * b) + 2 * p2 * a * b
        return a_d, b_d, front & (r2 <= max_r2)


@dataclass
class Projection:
    """A sparse depth map from projected points, with the counts the sanity checks use.

    Attributes:
        depth_m: float32 [H, W] planar depth [m], NaN where no point landed.
        points: Points projected (finite, in the cloud).
        in_image: Points that landed in the image (before the z-buffer kept one per pixel).
    """

    depth_m: np.ndarray
    points: int
    in_image: int


def project_to_depth(xyz_camera_m: np.ndarray, camera: CameraModel) -> Projection:
    """Project camera-frame points to a sparse depth image: nearest point per pixel.

    Args:
        xyz_camera_m: Points [N, 3] [m] in the camera's optical frame (x right, y down,
            z forward).
        camera: The camera (intrinsics of the image it describes).

    Returns:
        The sparse depth map and counts (:class:`Projection`).
    """
    xyz = np.asarray(xyz_camera_m).reshape(-1, 3)
    u, v, inside = camera.project(xyz)
    cols = np.rint(u[inside]).astype(np.int64)  # nearest pixel centre
    rows = np.rint(v[inside]).astype(np.int64)
    z = xyz[inside, 2].astype(np.float32)
    depth = np.full((camera.height, camera.width), np.nan, np.float32)
    if z.size:
        flat = rows * camera.width + cols
        order = np.lexsort((z, flat))  # by pixel, nearest first: the first of each pixel wins
        flat, z = flat[order], z[order]
        first = np.ones(flat.size, bool)
        first[1:] = flat[1:] != flat[:-1]
        depth.reshape(-1)[flat[first]] = z[first]
    return Projection(depth, int(xyz.shape[0]), int(inside.sum()))


#: Angular bin of :func:`coverage_fraction` [deg].
COVERAGE_BIN_DEG = 1.0
#: Elevations [deg] of the LiDAR frame a camera's optical axis is assumed to lie within.
COVERAGE_ELEVATION_DEG = 45.0


def coverage_fraction(xyz_lidar_m: np.ndarray, fov_rad: Sequence[float]) -> float:
    """The largest share of a cloud's points a camera of this field of view could see.

    From the cloud alone, in the LiDAR's own frame (z up, as REP 103 mounts it): the points'
    azimuth and elevation are binned by ``COVERAGE_BIN_DEG``, and a window of the camera's
    horizontal x vertical field of view slides over every azimuth and over elevations of
    +-``COVERAGE_ELEVATION_DEG``. Independent of the extrinsics, so it tells what the image
    should receive when they are right.

    Args:
        xyz_lidar_m: Points [N, 3] [m] in the LiDAR's frame.
        fov_rad: Camera ``(horizontal, vertical)`` field of view [rad].

    Returns:
        Share in [0, 1] (0 for an empty cloud).
    """
    xyz = np.asarray(xyz_lidar_m, dtype=np.float64).reshape(-1, 3)
    if xyz.shape[0] == 0:
        return 0.0
    az = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    el = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    step = COVERAGE_BIN_DEG
    n_az, n_el = int(round(360 / step)), int(round(180 / step))
    hist, _, _ = np.histogram2d(az, el, bins=(n_az, n_el), range=((0, 360), (-90, 90)))
    w_az = max(1, min(n_az, int(round(math.degrees(fov_rad[0]) / step))))
    w_el = max(1, min(n_el, int(round(math.degrees(fov_rad[1]) / step))))
    # window sums: circular along azimuth, plain along elevation (summed-area table)
    wrapped = np.concatenate([hist, hist[:w_az - 1]], axis=0)
    table = np.zeros((wrapped.shape[0] + 1, n_el + 1))
    table[1:, 1:] = wrapped.cumsum(0).cumsum(1)
    sums = (table[w_az:, w_el:] - table[:-w_az, w_el:] - table[w_az:, :-w_el]
            + table[:-w_az, :-w_el])[:n_az]
    # keep windows whose centre elevation is within the assumed range of the optical axis
    centres = -90.0 + step * (np.arange(sums.shape[1]) + w_el / 2)
    sums = sums[:, np.abs(centres) <= COVERAGE_ELEVATION_DEG]
    return float(sums.max() / xyz.shape[0]) if sums.size else 0.0
