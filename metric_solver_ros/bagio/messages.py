"""Bag messages: the type store, headers, stamps, Image / CompressedImage / CameraInfo / depth."""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from metric_solver_ros.conversions import depth_to_16uc1, header_stamp_ns  # noqa: F401 (re-exported)

STORAGES = ('mcap', 'sqlite3')
#: Depth encodings :func:`depth_to_image_msg` writes.
DEPTH_WRITE_ENCODINGS = ('32FC1', '16UC1')
#: rosbag2 metadata version written (rosbags writes 8 or 9; 8 is the older, for compatibility).
BAG_VERSION = 8

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINT_CLOUD2 = 'sensor_msgs/msg/PointCloud2'
#: The node's own message type (``msg/DepthInfo.msg``); :func:`recording_typestore` knows it.
DEPTH_INFO = 'metric_solver_ros/msg/DepthInfo'

X = TypeVar('X')
Y = TypeVar('Y')


@functools.lru_cache(maxsize=1)
def get_typestore() -> Any:
    """Return the (cached) rosbags type store used for every message: ROS 2 Humble."""
    import rosbags.typesys

    return rosbags.typesys.get_typestore(rosbags.typesys.Stores.ROS2_HUMBLE)


def _header(stamp_ns: int, frame_id: str) -> Any:
    """Build a ``std_msgs/Header`` for ``stamp_ns`` [ns since the epoch]."""
    types = get_typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """Read the header stamp of a serialised message that starts with ``std_msgs/Header``.

    Avoids deserialising large images when only the stamp is needed.

    Args:
        raw: CDR bytes (4-byte encapsulation header, then ``int32 sec``, ``uint32 nanosec``).

    Returns:
        Stamp [ns].

    Raises:
        ValueError: If the data is too short or not CDR.
    """
    raw = memoryview(raw)
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError('message data is not CDR with a leading std_msgs/Header')
    sec, nanosec = struct.unpack('<iI' if raw[1] == 1 else '>iI', raw[4:12])
    return sec * 1_000_000_000 + nanosec


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """Build an ``rgb8`` ``sensor_msgs/Image`` (rosbags type) from an RGB array.

    Args:
        rgb: uint8 array [H, W, 3], RGB order.
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.

    Returns:
        The message.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {rgb.shape}')
    height, width = rgb.shape[:2]
    return get_typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding='rgb8',
        is_bigendian=0, step=width * 3, data=rgb.reshape(-1))


def rgb_to_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str,
                          fmt: str = 'jpeg', jpeg_quality: int = 95) -> Any:
    """Build a ``sensor_msgs/CompressedImage`` (rosbags type) from an RGB array.

    Args:
        rgb: uint8 array [H, W, 3], RGB order.
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.
        fmt: ``'jpeg'`` (lossy, what cameras publish) or ``'png'`` (lossless).
        jpeg_quality: JPEG quality, 0..100.

    Returns:
        The message; ``format`` follows image_transport (``'rgb8; jpeg compressed bgr8'``).
    """
    import cv2

    if fmt not in ('jpeg', 'png'):
        raise ValueError(f'compressed format must be jpeg or png, got {fmt!r}')
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ValueError(f'OpenCV could not encode the image as {fmt}')
    return get_typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp_ns, frame_id), format=f'rgb8; {fmt} compressed bgr8',
        data=encoded.reshape(-1))


def depth_to_image_msg(depth_m: np.ndarray, stamp_ns: int, frame_id: str,
                       encoding: str = '32FC1') -> Any:
    """Build a depth ``sensor_msgs/Image`` (rosbags type).

    Args:
        depth_m: float array [H, W] of depth [m]; 0 / NaN invalid, +inf too far.
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.
        encoding: ``'32FC1'``: metres, values kept as they are (REP 117: NaN invalid, +inf far);
            ``'16UC1'``: millimetres rounded to the nearest integer, with 0 for everything
            16 bits cannot hold (0 / NaN, +inf, below 0.5 mm, above 65.535 m).

    Returns:
        The message (little endian).
    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if depth_m.ndim != 2:
        raise ValueError(f'expected an HxW depth image, got shape {depth_m.shape}')
    height, width = depth_m.shape
    if encoding == '32FC1':
        values = depth_m.astype('<f4')
    elif encoding == '16UC1':
        values = depth_to_16uc1(depth_m).astype('<u2')
    else:
        raise ValueError(f'depth encoding must be one of {DEPTH_WRITE_ENCODINGS}, got {encoding!r}')
    return get_typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=width * values.itemsize,
        data=np.ascontiguousarray(values).view(np.uint8).reshape(-1))


def camera_info_msg(intrinsics: Sequence[float], width: int, height: int, stamp_ns: int,
                    frame_id: str) -> Any:
    """Build a distortion-free pinhole ``sensor_msgs/CameraInfo`` (rosbags type).

    Args:
        intrinsics: ``(fx, fy, cx, cy)`` [px].
        width: Image width [px].
        height: Image height [px].
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.

    Returns:
        The message (``plumb_bob`` with zero distortion, identity R, P = [K | 0]).
    """
    types = get_typestore().types
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return types[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model='plumb_bob', d=np.zeros(5),
        k=np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
        r=np.eye(3).reshape(-1),
        p=np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
