"""The node's output messages, built from an engine result without per-byte Python.

One function per output topic: ``depth`` (:func:`depth_msg`, 32FC1 [m], REP 117, or 16UC1
[mm], REP 118),
``anchor_mask`` (:func:`mask_msg`, mono8, 255 = near), ``points`` (:func:`cloud_msg`, organised
PointCloud2), ``depth/camera_info`` (:func:`depth_camera_info_msg`) and ``depth_info``
(:func:`depth_info_msg`). Every message carries the input image's header. Array fields are filled
from a memoryview (:func:`as_uint8_array`): assigning ``bytes`` to a ``uint8[]`` field runs a
per-byte check in the generated setter. Decoding of incoming messages is
:mod:`metric_solver_ros.conversions`; nothing here needs a node.
"""

from __future__ import annotations

import array
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from metric_solver_ros.conversions import (
    POINTFIELD_FLOAT32,
    cloud_dtype,
    depth_to_16uc1,
    pack_cloud,
    stamp_to_ns,
)
from metric_solver_ros.msg import DepthInfo

if TYPE_CHECKING:
    from metric_solver_ros.engine import DepthResult

#: CameraInfo fields copied from the input camera_info to ``depth/camera_info``.
_CAMERA_INFO_FIELDS = ('height', 'width', 'distortion_model', 'd', 'k', 'r', 'p',
                       'binning_x', 'binning_y', 'roi')


def as_uint8_array(values: np.ndarray) -> array.array:
    """A ``uint8[]`` field value holding the bytes of ``values``, without per-byte Python work."""
    out = array.array('B')
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast('B'))
    return out


def image_msg(header: Any, values: np.ndarray, encoding: str) -> Image:
    """A ``sensor_msgs/Image`` of an HxW array (``encoding`` must match its dtype)."""
    msg = Image(header=header, height=values.shape[0], width=values.shape[1],
                encoding=encoding, is_bigendian=0)
    msg.step = values.shape[1] * values.dtype.itemsize
    msg.data = as_uint8_array(values)
    return msg


def depth_msg(header: Any, depth_m: np.ndarray, encoding: str = '32FC1') -> Image:
    """The ``depth`` image in ``encoding`` (one of ``parameters.DEPTH_ENCODINGS``).

    32FC1: [m], NaN undefined, +inf beyond the far limit (REP 117). 16UC1: [mm], 0 for no
    depth, also +inf and beyond 65.535 m (REP 118; :func:`~metric_solver_ros.conversions.
    depth_to_16uc1`).
    """
    if encoding == '16UC1':
        return image_msg(header, depth_to_16uc1(depth_m), '16UC1')
    return image_msg(header, depth_m, '32FC1')


def mask_msg(header: Any, near: np.ndarray) -> Image:
    """The ``anchor_mask`` image: mono8, 255 where the near branch holds (bool HxW ``near``)."""
    return image_msg(header, near.astype(np.uint8) * np.uint8(255), 'mono8')


def cloud_msg(header: Any, xyz_m: np.ndarray, rgb: np.ndarray | None = None,
              cloud: np.ndarray | None = None) -> PointCloud2:
    """The organised ``points`` cloud: x, y, z [m] (NaN invalid) and, with ``rgb``, colour.

    Args:
        header: Header of the input image.
        xyz_m: float32 [H, W, 3] camera-frame points [m].
        rgb: uint8 [H, W, 3] colours, or None.
        cloud: The same points already in the message layout (the engine's
            ``DepthResult.cloud``: float32 [H, W, 3 or 4], packed on the device): its bytes
            are sent as they are, and ``xyz_m`` / ``rgb`` are not read.
    """
    if cloud is None:
        cloud = pack_cloud(xyz_m, rgb)
    else:
        cloud = cloud.view(cloud_dtype(cloud.shape[-1] == 4))[..., 0]
    msg = PointCloud2(header=header, height=cloud.shape[0], width=cloud.shape[1],
                      is_bigendian=False, is_dense=False)
    msg.fields = [PointField(name=name, offset=cloud.dtype.fields[name][1],
                             datatype=POINTFIELD_FLOAT32, count=1)
                  for name in cloud.dtype.names]
    msg.point_step = cloud.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.data = as_uint8_array(cloud)
    return msg


def depth_camera_info_msg(info: Any, header: Any, depth_shape: tuple[int, int]) -> CameraInfo:
    """``depth/camera_info``: the input camera_info under the image's header.

    Args:
        info: The camera_info paired with the image.
        header: Header of the input image.
        depth_shape: ``(height, width)`` [px] of the depth image; used when ``info`` says no
            size (else the sensor's size stays as it was said, REP 104).
    """
    out = CameraInfo()
    for field in _CAMERA_INFO_FIELDS:
        setattr(out, field, getattr(info, field))
    if not (out.width or out.height or out.binning_x > 1 or out.binning_y > 1):
        out.height, out.width = depth_shape
    out.header = header
    return out


def depth_statistics(depth_m: np.ndarray, near: np.ndarray
                     ) -> tuple[float, float, float, float, float]:
    """DepthInfo's statistics of one depth image.

    Args:
        depth_m: Depth [m], HxW (NaN undefined, +inf beyond the far limit).
        near: Near mask, bool HxW.

    Returns:
        ``(near_fraction, far_fraction, min_m, median_m, max_m)``: fractions of the defined
        (non-NaN) pixels that are near / +inf; min, median and max of the finite depths [m]
        (NaN when there are none).
    """
    defined = ~np.isnan(depth_m)
    finite = depth_m[np.isfinite(depth_m)]
    n_defined = max(int(defined.sum()), 1)
    near_fraction = float((near & defined).sum()) / n_defined
    far_fraction = float(np.isposinf(depth_m).sum()) / n_defined
    if not finite.size:
        return near_fraction, far_fraction, math.nan, math.nan, math.nan
    return (near_fraction, far_fraction, float(finite.min()), float(np.median(finite)),
            float(finite.max()))


def depth_info_msg(result: DepthResult, header: Any, anchor_mode: str,
                   clock_ns: Callable[[], int], frames_skipped: int,
                   requested_ns: int | None = None) -> DepthInfo:
    """The ``depth_info`` message of one result.

    Args:
        result: The engine's result for the image.
        header: Header of the input image.
        anchor_mode: The ``anchor_mode`` parameter in effect.
        clock_ns: The node clock's time [ns] (0 under ``use_sim_time`` before the first
            /clock); read once the statistics are done, so the latency covers them.
        frames_skipped: Images replaced by a newer one before they were processed, so far.
        requested_ns: For a re-decode of the last frame after an anchor change: when the
            change was requested [ns, node clock]; None for a new image.

    Returns:
        DepthInfo with ``latency_ms`` = now - image stamp [ms], or now - ``requested_ns`` for
        a re-decode (``redecoded`` true: the header is the old frame's); NaN without a stamp
        or a clock.
    """
    depth = result.depth_m
    msg = DepthInfo(header=header)
    msg.anchor = float(max(result.anchors_m))
    msg.anchors = array.array('f', result.anchors_m)
    (msg.near_fraction, msg.far_fraction, msg.min_depth, msg.median_depth,
     msg.max_depth) = (result.statistics if result.statistics is not None
                       else depth_statistics(depth, result.near))
    msg.inference_ms = float(result.timings_ms.get('total', 0.0))
    msg.redecoded = requested_ns is not None
    since_ns = (requested_ns if msg.redecoded
                else stamp_to_ns(header.stamp))
    now_ns = clock_ns()
    msg.latency_ms = float((now_ns - since_ns) / 1e6) if since_ns and now_ns else math.nan
    msg.anchor_mode = anchor_mode
    msg.height, msg.width = depth.shape
    msg.frames_skipped = frames_skipped
    return msg
