"""Message <-> numpy conversions, without rclpy.

Functions here read message *fields* (``height``, ``width``, ``encoding``, ``step``, ``data``,
``k``, ...) and never import a message package, so the same code serves rclpy messages in the node
and `rosbags` messages in the offline tools. Every malformed message raises :class:`MessageError`
with a sentence that says what is wrong; nothing is silently reinterpreted.

Conventions (REP 117/118): depth images are ``32FC1`` in metres with NaN for "no measurement" and
+inf for "too far"; ``16UC1`` depth is millimetres with 0 for "no measurement".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Colour encodings the node accepts: encoding -> channels.
COLOR_ENCODINGS: dict[str, int] = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'mono8': 1}
#: Depth encodings the tools accept as ground truth: encoding -> (numpy dtype, metres per unit).
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {'32FC1': ('f4', 1.0), '16UC1': ('u2', 1e-3)}
#: Largest depth a ``16UC1`` image holds [mm] (65.535 m); farther depth is written as 0.
MAX_16UC1_MM = 65535
#: Largest accepted image side [px]; bigger images are refused rather than exhausting memory.
MAX_IMAGE_SIDE_PX = 8192

#: OpenCV conversion (``cv2`` attribute name) of each colour encoding other than rgb8. OpenCV is
#: imported only where it is used, so that the node runs rgb8 images without it (the GPU kit of
#: tools/gpu_ros_kit.sh carries no OpenCV).
_COLOR_TO_RGB = {
    'bgr8': 'COLOR_BGR2RGB',
    'rgba8': 'COLOR_RGBA2RGB',
    'bgra8': 'COLOR_BGRA2RGB',
    'mono8': 'COLOR_GRAY2RGB',
}


class MessageError(ValueError):
    """A message that cannot be converted; the text says why."""


def stamp_to_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` [s, ns] in nanoseconds (rclpy and rosbags messages)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """Return ``msg.header.stamp`` in nanoseconds (rclpy and rosbags messages)."""
    return stamp_to_ns(msg.header.stamp)


def _image_rows(msg: Any, channels: int, itemsize: int) -> np.ndarray:
    """Validate the geometry of an Image message and return its pixel rows.

    Args:
        msg: A ``sensor_msgs/Image``-like object.
        channels: Channels per pixel of its encoding.
        itemsize: Bytes per channel.

    Returns:
        uint8 array [height, width * channels * itemsize] viewing ``msg.data`` (row padding cut).

    Raises:
        MessageError: On zero or huge sizes, a ``step`` shorter than a row, or ``data`` whose
            length is not ``height * step``.
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise MessageError(f'image has zero size ({width}x{height})')
    if height > MAX_IMAGE_SIDE_PX or width > MAX_IMAGE_SIDE_PX:
        raise MessageError(
            f'image of {width}x{height} px exceeds the {MAX_IMAGE_SIDE_PX} px limit per side')
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise MessageError(
            f'step {step} is shorter than one row ({width} px x {channels * itemsize} bytes '
            f'= {row_bytes}) for encoding {msg.encoding!r}')
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != height * step:
        raise MessageError(
            f'data holds {data.size} bytes but height x step = {height} x {step} = '
            f'{height * step}')
    return data.reshape(height, step)[:, :row_bytes]


def image_to_rgb(msg: Any) -> np.ndarray:
    """Convert a colour or mono ``sensor_msgs/Image`` to an RGB array.

    Args:
        msg: Image with encoding ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` or ``mono8``.

    Returns:
        Contiguous uint8 array [H, W, 3], RGB order (a view of ``msg.data`` for ``rgb8``).

    Raises:
        MessageError: For other encodings (16-bit, float, Bayer, ...) or a malformed message.
    """
    encoding = str(msg.encoding)
    channels = COLOR_ENCODINGS.get(encoding)
    if channels is None:
        raise MessageError(
            f'unsupported image encoding {encoding!r}; expected one of '
            f'{", ".join(COLOR_ENCODINGS)}')
    rows = _image_rows(msg, channels, 1)
    pixels = rows.reshape(int(msg.height), int(msg.width), channels)
    if encoding == 'rgb8':
        return pixels if pixels.flags.c_contiguous else np.ascontiguousarray(pixels)
    if encoding == 'mono8':
        pixels = pixels[:, :, 0]
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(pixels), getattr(cv2, _COLOR_TO_RGB[encoding]))


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) with OpenCV.

    Args:
        msg: CompressedImage; ``format`` is informative only, OpenCV detects the codec.

    Returns:
        uint8 array [H, W, 3], RGB order.

    Raises:
        MessageError: If the data is empty, corrupt, or decodes to an oversize image.
    """
    import cv2

    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise MessageError('compressed image has no data')
    try:  # as stored: CameraInfo describes the sensor's pixels, whatever an EXIF tag says
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV will allocate
        last = str(exc).strip().splitlines()[-1][:160]
        raise MessageError(f'could not decode compressed image (format {str(msg.format)!r}, '
                           f'{data.size} bytes): {last}') from None
    if image is None:
        raise MessageError(
            f'could not decode compressed image (format {str(msg.format)!r}, {data.size} bytes)')
    if max(image.shape[:2]) > MAX_IMAGE_SIDE_PX:
        raise MessageError(f'decoded image of {image.shape[1]}x{image.shape[0]} px is too large')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def depth_image_to_m(msg: Any) -> np.ndarray:
    """Convert a depth ``sensor_msgs/Image`` to metres.

    Args:
        msg: Image with encoding ``32FC1`` (metres) or ``16UC1`` (millimetres, 0 = invalid).

    Returns:
        float32 array [H, W] in metres; NaN where the source has no measurement (16UC1 zeros;
        32FC1 values are kept, including NaN, +inf and 0).

    Raises:
        MessageError: For other encodings or a malformed message.
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise MessageError(
            f'unsupported depth encoding {encoding!r}; expected one of '
            f'{", ".join(DEPTH_ENCODINGS)}')
    kind, metres_per_unit = DEPTH_ENCODINGS[encoding]
    dtype = np.dtype(('>' if msg.is_bigendian else '<') + kind)
    rows = _image_rows(msg, 1, dtype.itemsize)
    values = np.ascontiguousarray(rows).view(dtype).reshape(int(msg.height), int(msg.width))
    if encoding == '16UC1':
        depth_m = values.astype(np.float32) * np.float32(metres_per_unit)
        depth_m[values == 0] = np.nan
        return depth_m
    return values.astype(np.float32, copy=True)


def rounded_mm(depth_m: np.ndarray) -> np.ndarray:
    """Depth [m] as whole millimetres (float64, NaN / inf kept): what ``16UC1`` stores."""
    return np.rint(np.asarray(depth_m, dtype=np.float64) * 1000.0)


def depth_to_16uc1(depth_m: np.ndarray) -> np.ndarray:
    """Depth [m] as ``16UC1`` values: millimetres rounded to the nearest, 0 for no depth.

    0 (REP 118's "no measurement") is written for everything 16 bits cannot hold: 0 / NaN,
    +inf (too far), below 0.5 mm and beyond :data:`MAX_16UC1_MM` (65.535 m).

    Returns:
        uint16 array of ``depth_m``'s shape (native byte order).
    """
    mm = rounded_mm(depth_m)
    with np.errstate(invalid='ignore'):
        representable = np.isfinite(mm) & (mm >= 1) & (mm <= MAX_16UC1_MM)
    return np.where(representable, mm, 0).astype(np.uint16)


def _binning_and_roi(msg: Any) -> tuple[int, int, int, int, int, int]:
    """``(bx, by, x_offset, y_offset, roi_width, roi_height)`` of a CameraInfo (REP 104)."""
    bx = int(getattr(msg, 'binning_x', 0) or 0) or 1  # 0 and 1 both mean no binning
    by = int(getattr(msg, 'binning_y', 0) or 0) or 1
    roi = getattr(msg, 'roi', None)
    if roi is None or not (roi.width and roi.height):
        return bx, by, 0, 0, 0, 0  # the full resolution (REP 104: an unset roi is all 0)
    return bx, by, int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height)


def camera_info_image_size(msg: Any) -> tuple[int, int]:
    """``(width, height)`` [px] of the images a CameraInfo describes (REP 104).

    ``width`` / ``height`` are the sensor's full resolution; a region of interest and binning
    make the images smaller. (0, 0) when the message leaves the size unset.
    """
    bx, by, _, _, roi_w, roi_h = _binning_and_roi(msg)
    return (roi_w or int(msg.width)) // bx, (roi_h or int(msg.height)) // by


def camera_info_to_intrinsics(msg: Any) -> tuple[float, float, float, float]:
    """Read the pinhole intrinsics of a ``sensor_msgs/CameraInfo``, for the images it describes.

    Args:
        msg: CameraInfo; the intrinsic matrix ``k`` (row-major 3x3, at the sensor's full
            resolution) is used, reduced by the region of interest and binning when the message
            has them (REP 104, as image_geometry does).

    Returns:
        ``(fx, fy, cx, cy)`` in pixels of the (binned, cropped) image.

    Raises:
        MessageError: If ``k`` is missing, non-finite, or has a non-positive focal length.
    """
    k = [float(v) for v in msg.k]
    if len(k) != 9:
        raise MessageError(f'camera_info k has {len(k)} values, expected 9')
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)):
        raise MessageError(f'camera_info intrinsics are not finite (fx={fx}, fy={fy}, '
                           f'cx={cx}, cy={cy})')
    if fx <= 0.0 or fy <= 0.0:
        raise MessageError(f'camera_info focal lengths must be > 0 (fx={fx}, fy={fy})')
    bx, by, x0, y0, _, _ = _binning_and_roi(msg)
    return fx / bx, fy / by, (cx - x0) / bx, (cy - y0) / by


def scale_intrinsics(intrinsics: Sequence[float], from_size: tuple[int, int],
                     to_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Rescale pinhole intrinsics between image sizes (pixel-centre convention).

    Args:
        intrinsics: ``(fx, fy, cx, cy)`` [px] at ``from_size``.
        from_size: ``(width, height)`` [px] the intrinsics belong to.
        to_size: ``(width, height)`` [px] of the target image.

    Returns:
        ``(fx, fy, cx, cy)`` [px] at ``to_size``.
    """
    fx, fy, cx, cy = intrinsics
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5


#: PointCloud2 field datatype FLOAT32 (sensor_msgs/PointField).
POINTFIELD_FLOAT32 = 7


def cloud_dtype(with_rgb: bool) -> np.dtype:
    """Return the packed point layout: x, y, z float32 [m] (+ rgb as PCL's packed float32)."""
    names = ['x', 'y', 'z'] + (['rgb'] if with_rgb else [])
    return np.dtype({'names': names, 'formats': ['<f4'] * len(names)})


def pack_cloud(xyz_m: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
    """Pack points into the PointCloud2 byte layout of :func:`cloud_dtype`.

    Args:
        xyz_m: float32 array [..., 3] of camera-frame points [m] (NaN for invalid points).
        rgb: Optional uint8 array [..., 3] of colours, same leading shape.

    Returns:
        Structured array with the leading shape of ``xyz_m`` (its ``tobytes()`` is the
        PointCloud2 ``data``; ``dtype.itemsize`` is ``point_step``).
    """
    lead = xyz_m.shape[:-1]
    xyz = np.ascontiguousarray(xyz_m, dtype='<f4')
    if rgb is None:
        return xyz.view(cloud_dtype(False))[..., 0]
    import cv2

    # OpenCV's channel shuffles are vectorised; numpy's strided field writes are ~2x slower.
    # PCL's packed colour: the little-endian uint32 0x00RRGGBB, i.e. the bytes B, G, R, 0.
    rgb = np.asarray(rgb, dtype=np.uint8)
    if rgb.ndim == 3 and not rgb.flags.c_contiguous:
        # e.g. the engine's colours, a view of planar (CHW) memory: its planes are contiguous
        planes = [np.ascontiguousarray(rgb[..., c]) for c in (2, 1, 0)]
        colour = cv2.merge([*planes, np.zeros_like(planes[0])]).reshape(-1, 1, 4).view(np.int32)
    else:
        colour = cv2.cvtColor(np.ascontiguousarray(rgb).reshape(-1, 1, 3),
                              cv2.COLOR_RGB2BGRA).view(np.int32)
    np.bitwise_and(colour, 0x00FFFFFF, out=colour)
    packed = cv2.merge([xyz.reshape(-1, 1, 3), colour.view(np.float32)])
    return packed.reshape(*lead, 4).view(cloud_dtype(True))[..., 0]
