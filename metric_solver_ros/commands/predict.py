r"""``metric-solver predict``: metric depth for image files, without ROS.

Examples::

    metric-solver predict photo.jpg --anchor 2 --out predict_out
    metric-solver predict frames/*.png --anchors 2 10 40 --camera-info camera.yaml \\
        --points-stride 2 --max-range 20 --out predict_out
    metric-solver predict img.png --anchor 10 --fx 525 --fy 525 --cx 319.5 --cy 239.5
    metric-solver predict frames/ --anchor 10 --temporal-filter scale --out predict_seq

Outputs in ``--out``, per image ``<stem>``:

- ``<stem>_depth.npy``: float32 [H, W] depth [m] at the image resolution; +inf beyond the far
  limit (sky), NaN undefined (REP 117), kept as they are.
- ``<stem>_depth_mm.png``: uint16 depth [mm]; 0 = NaN, +inf or beyond 65.535 m.
- ``<stem>_depth.png``: colour-mapped depth (log scale) with a metric colour bar.
- ``<stem>_mask.png``: uint8 anchor mask, 255 where the near branch (inside an anchor) gave the
  depth.
- ``<stem>.ply``: with intrinsics only; the finite points within ``--max-range`` (camera optical
  frame [m], coloured), one per ``--points-stride``-th pixel in x and y.

A folder stands for its image files in name order (a recorded sequence). With
``--temporal-filter scale|full`` the images are one stream, filtered in the order given as the
node filters its topic (``metric_solver_ros.temporal_filter``); every output then holds the
filtered depth (the PLY points are moved along their rays to it). Image files carry no camera
poses: ``--motion-hint still`` tells the filter the camera did not move (a tripod), so it holds
the scale, as the node does when its odometry says so; ``off`` (default): the filter is blind.

Intrinsics come from ``--fx --fy --cx --cy`` (at the image resolution) or from a ROS
camera_calibration YAML (``--camera-info``); the YAML's intrinsics are rescaled to each image's
resolution when it differs from ``image_width`` x ``image_height`` (the command says so).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import types
from typing import Any

import numpy as np

from metric_solver_ros.commands.common import add_model_arguments, engine_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver predict``."""
    parser.add_argument('images', nargs='+', type=pathlib.Path, metavar='IMAGE',
                        help='8-bit colour or grey image files (anything OpenCV reads: PNG, '
                             'JPEG, ...) or folders of them (taken in name order); 16-bit and '
                             'float files (depth maps) are refused')
    anchors = parser.add_mutually_exclusive_group()
    anchors.add_argument('--anchor', type=float, default=10.0, metavar='M',
                         help='anchor depth [m]: pixels nearer than it use the near branch '
                              '(default: %(default)s)')
    anchors.add_argument('--anchors', type=float, nargs='+', default=None, metavar='M',
                         help='several anchors [m], fused per pixel (multi-anchor fusion)')
    add_model_arguments(parser)
    parser.add_argument('--temporal-filter', choices=('off', 'scale', 'full'), default='off',
                        help='treat the images as one sequence and filter its depth over time: '
                             'scale smooths the global scale, full also static pixels '
                             '(default: %(default)s)')
    parser.add_argument('--motion-hint', choices=('off', 'still'), default='off',
                        help='with --temporal-filter: still = the camera did not move between '
                             'the images (the filter holds the scale); off = unknown '
                             '(default: %(default)s)')
    out = parser.add_argument_group('outputs')
    out.add_argument('--out', type=pathlib.Path, default=pathlib.Path('predict_out'),
                     help='output directory, created if needed (default: %(default)s)')
    points = parser.add_argument_group('intrinsics and point cloud (PLY)')
    for name in ('fx', 'fy', 'cx', 'cy'):
        points.add_argument(f'--{name}', type=float, default=None, metavar='PX',
                            help=f'{name} [px] at the image resolution (give all four)')
    points.add_argument('--camera-info', type=pathlib.Path, default=None, metavar='YAML',
                        help='ROS camera_calibration YAML (image_width, image_height, '
                             'camera_matrix.data); scaled to each image\'s resolution')
    points.add_argument('--points-stride', type=int, default=1, metavar='N',
                        help='keep every N-th pixel in x and y in the PLY (default: 1)')
    points.add_argument('--max-range', type=float, default=0.0, metavar='M',
                        help='leave out points farther than this [m] from the camera; '
                             '0 = keep every finite point (default)')


def read_camera_info_yaml(path: pathlib.Path) -> tuple[tuple[float, float, float, float],
                                                        tuple[int, int], bool]:
    """Read a ROS camera_calibration YAML.

    Args:
        path: The file (``image_width``, ``image_height``, ``camera_matrix: {data: [9]}``;
            ``distortion_coefficients`` is optional).

    Returns:
        ``((fx, fy, cx, cy) [px], (width, height) [px], distorted)``; ``distorted`` is True when
        a distortion coefficient is not zero.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not such a YAML, or its intrinsics are not valid.
    """
    import yaml

    from metric_solver_ros.conversions import MessageError, camera_info_to_intrinsics

    if not path.is_file():
        raise FileNotFoundError(f'no camera info file at {path}')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f'{path} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise ValueError(f'{path} is not a camera_calibration YAML (expected a mapping)')
    missing = [k for k in ('image_width', 'image_height', 'camera_matrix') if k not in data]
    if missing:
        raise ValueError(f'{path} lacks {", ".join(missing)} (camera_calibration format: '
                         'image_width, image_height, camera_matrix.data)')
    matrix = data['camera_matrix']
    values = matrix.get('data') if isinstance(matrix, dict) else None
    if not isinstance(values, list) or len(values) != 9:
        raise ValueError(f'{path}: camera_matrix.data must hold 9 numbers (row-major 3x3 K)')
    try:
        width, height = int(data['image_width']), int(data['image_height'])
        intrinsics = camera_info_to_intrinsics(types.SimpleNamespace(k=values))
    except (TypeError, ValueError, MessageError) as exc:
        raise ValueError(f'{path}: {exc}') from exc
    if width <= 0 or height <= 0:
        raise ValueError(f'{path}: image_width and image_height must be > 0, got {width}x{height}')
    distortion = data.get('distortion_coefficients') or {}
    coefficients = distortion.get('data', []) if isinstance(distortion, dict) else []
    try:
        distorted = any(float(c) != 0.0 for c in coefficients or [])
    except (TypeError, ValueError) as exc:
        raise ValueError(f'{path}: distortion_coefficients.data must be numbers') from exc
    return intrinsics, (width, height), distorted


def _check(args: argparse.Namespace) -> None:
    """Reject bad options and missing inputs before the model is loaded (ValueError, ...)."""
    anchors = args.anchors if args.anchors is not None else [args.anchor]
    bad = [a for a in anchors if not (math.isfinite(a) and a > 0)]
    if bad:
        raise ValueError(f'anchors must be finite numbers > 0 m, got {", ".join(map(str, bad))}')
    given = [n for n in ('fx', 'fy', 'cx', 'cy') if getattr(args, n) is not None]
    if given and len(given) != 4:
        missing = sorted({'fx', 'fy', 'cx', 'cy'} - set(given))
        raise ValueError(f'give all of --fx --fy --cx --cy (missing: '
                         f'{", ".join("--" + m for m in missing)})')
    if given and args.camera_info is not None:
        raise ValueError('give either --fx --fy --cx --cy or --camera-info, not both')
    if given and not (args.fx > 0 and args.fy > 0):
        raise ValueError(f'focal lengths must be > 0 px, got fx={args.fx}, fy={args.fy}')
    if args.motion_hint != 'off' and args.temporal_filter == 'off':
        raise ValueError('--motion-hint still is a hint for the temporal filter: give '
                         '--temporal-filter scale or full too')
    if args.points_stride < 1:
        raise ValueError(f'--points-stride must be >= 1, got {args.points_stride}')
    if not args.max_range >= 0:
        raise ValueError(f'--max-range must be >= 0 m, got {args.max_range}')
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise FileNotFoundError(f'no checkpoint at {args.checkpoint}')
    args.images = expand_folders(args.images)
    _check_images(args.images)


def expand_folders(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    """Replace each folder by the image files in it (OpenCV-readable), in name order.

    Raises:
        ValueError: If a folder holds no image.
    """
    import cv2

    out: list[pathlib.Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(path)
            continue
        images = sorted((p for p in path.iterdir()
                         if p.is_file() and cv2.haveImageReader(str(p))), key=lambda p: p.name)
        if not images:
            raise ValueError(f'no image file in the folder {path}')
        out.extend(images)
    return out


def _check_images(paths: list[pathlib.Path]) -> None:
    """Every input must be an 8-bit image OpenCV can decode, and no two may share a stem."""
    import cv2

    stems: dict[str, pathlib.Path] = {}
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f'no image at {path}')
        if not cv2.haveImageReader(str(path)):
            raise ValueError(f'cannot read {path}: not an image format OpenCV knows')
        # At 1/8 size (a JPEG decodes in a fraction of the time): only the kind matters here.
        _decode_8bit(path, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if path.stem in stems:
            raise ValueError(f'{stems[path.stem]} and {path} would write the same outputs '
                             f'({path.stem}_*); rename one or run them separately')
        stems[path.stem] = path


#: The 8 EXIF orientations as (transform of an image array [H, W, ...], transform of the
#: intrinsics (fx, fy, cx, cy) of an H x W image); pixel centres at integer coordinates.
_ORIENTATIONS = (
    (lambda a: a, lambda k, h, w: k),
    (lambda a: a[:, ::-1], lambda k, h, w: (k[0], k[1], w - 1 - k[2], k[3])),
    (lambda a: a[::-1, ::-1], lambda k, h, w: (k[0], k[1], w - 1 - k[2], h - 1 - k[3])),
    (lambda a: a[::-1], lambda k, h, w: (k[0], k[1], k[2], h - 1 - k[3])),
    (lambda a: a.swapaxes(0, 1), lambda k, h, w: (k[1], k[0], k[3], k[2])),
    (lambda a: np.rot90(a, -1), lambda k, h, w: (k[1], k[0], h - 1 - k[3], k[2])),
    (lambda a: a.swapaxes(0, 1)[::-1, ::-1],
     lambda k, h, w: (k[1], k[0], h - 1 - k[3], w - 1 - k[2])),
    (lambda a: np.rot90(a, 1), lambda k, h, w: (k[1], k[0], k[3], w - 1 - k[2])),
)


def upright(stored: Any, shown: Any, intrinsics: tuple[float, ...]
            ) -> tuple[Any, tuple[float, ...]]:
    """Turn intrinsics of the stored pixels into those of the upright (EXIF-applied) image.

    Args:
        stored: The image as stored (EXIF orientation ignored), [H, W, 3].
        shown: The same file as a viewer shows it (orientation applied).
        intrinsics: ``(fx, fy, cx, cy)`` [px] of ``stored``.

    Returns:
        ``(shown, its intrinsics)``: the network sees the photo upright, and the points it
        back-projects are in the upright camera's frame (mirrored for the EXIF mirror tags
        2, 4, 5, 7: a mirror image has mirrored geometry).

    Raises:
        ValueError: If no orientation maps one image onto the other, or several do with other
            intrinsics (a symmetric image, e.g. a blank one: the tag cannot be told).
    """
    h, w = stored.shape[:2]
    candidates = {tuple(float(v) for v in intrinsics_of(intrinsics, h, w))
                  for image_of, intrinsics_of in _ORIENTATIONS
                  if np.array_equal(image_of(stored), shown)}  # (False for other shapes)
    if len(candidates) != 1:
        raise ValueError('cannot tell how the EXIF orientation turned the image '
                         + ('(none of the 8 fits)' if not candidates else '(it is symmetric)'))
    return shown, candidates.pop()


def _decode_8bit(path: pathlib.Path, flags: int = 0) -> Any:
    """Decode ``path`` with OpenCV, refusing anything but an 8-bit photo.

    predict takes what cameras give: 8-bit colour (alpha dropped) or grey (replicated to RGB)
    images. A 16-bit or float file (any number of channels) is refused, not scaled to 8 bits:
    it is almost always a depth map or another measurement (16-bit PNG is the common depth
    format), and a prediction from it would be meaningless.

    Args:
        path: The image file.
        flags: Extra ``cv2.IMREAD_*`` flags (orientation, reduced size); the file's bit depth
            and grey / colour layout are kept (``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``) so that
            they can be checked.

    Returns:
        uint8 [H, W] grey or [H, W, 3] BGR.

    Raises:
        ValueError: The file does not decode, or is not 8-bit (naming the file, its bit depth,
            channels and dtype, and what is taken).
    """
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | flags)
    if image is None:
        raise ValueError(f'cannot read {path}: the file is not a decodable image')
    if image.dtype != np.uint8:
        channels = 1 if image.ndim == 2 else image.shape[2]
        raise ValueError(f'{path} is a {8 * image.dtype.itemsize}-bit {channels}-channel image '
                         f'({image.dtype}), not a camera photo: predict takes 8-bit colour or '
                         'grey images (a 16-bit PNG is usually a depth map)')
    return image


def read_rgb(path: pathlib.Path, as_stored: bool = False) -> Any:
    """Read an 8-bit image file as uint8 RGB [H, W, 3] (grey and alpha images are converted).

    Args:
        path: The image file.
        as_stored: Ignore an EXIF orientation tag (phone JPEGs): the pixels as stored, which
            given intrinsics refer to. Otherwise the image is turned upright, as a viewer
            shows it.

    Raises:
        ValueError: If OpenCV cannot decode it, or it is not 8-bit (:func:`_decode_8bit`).
    """
    import cv2

    image = _decode_8bit(path, cv2.IMREAD_IGNORE_ORIENTATION if as_stored else 0)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def run(args: argparse.Namespace) -> int:
    """Predict and write the outputs; return 0, or raise ValueError / FileNotFoundError."""
    import cv2
    from tqdm import tqdm

    from metric_solver_ros.conversions import scale_intrinsics
    from metric_solver_ros.engine import PointsRequest
    from metric_solver_ros.temporal_filter import CameraMotion, TemporalFilter, move_points
    from metric_solver_ros.visualize import (
        depth_figure,
        write_depth_png_mm,
        write_ply,
        write_rgb_png,
    )

    _check(args)
    calibration = None
    if args.camera_info is not None:
        calibration = read_camera_info_yaml(args.camera_info)
        if calibration[2]:
            print(f'note: {args.camera_info} has non-zero distortion; points are back-projected '
                  'with K only (pass rectified images for exact points)')
    engine = engine_from_args(args)
    anchors = engine.validate_anchors(args.anchors if args.anchors is not None else args.anchor)
    max_range_m = args.max_range if args.max_range > 0 else math.inf
    args.out.mkdir(parents=True, exist_ok=True)
    stream = TemporalFilter(args.temporal_filter)
    motion = CameraMotion() if args.motion_hint == 'still' else None

    scaled_notes: set[tuple[int, int]] = set()
    progress = tqdm(args.images, unit='image', disable=len(args.images) < 2)
    for path in progress:
        rgb = read_rgb(path, as_stored=args.fx is not None or calibration is not None)
        height, width = rgb.shape[:2]  # the stored pixels: what given intrinsics describe
        intrinsics = None
        if args.fx is not None:
            intrinsics = (args.fx, args.fy, args.cx, args.cy)
        elif calibration is not None:
            intrinsics, calibrated_size, _ = calibration
            if calibrated_size != (width, height):
                intrinsics = scale_intrinsics(intrinsics, calibrated_size, (width, height))
                if (width, height) not in scaled_notes:
                    scaled_notes.add((width, height))
                    fx, fy, cx, cy = intrinsics
                    progress.write(
                        f'note: {args.camera_info} is for {calibrated_size[0]}x'
                        f'{calibrated_size[1]} px; intrinsics scaled to {width}x{height} px '
                        f'(fx {fx:.2f}, fy {fy:.2f}, cx {cx:.2f}, cy {cy:.2f})')
        if intrinsics is not None:  # an EXIF-rotated photo: image and intrinsics upright
            shown = read_rgb(path)
            if not np.array_equal(shown, rgb):
                try:
                    rgb, intrinsics = upright(rgb, shown, intrinsics)
                except ValueError as exc:
                    progress.write(f'note: {path}: {exc}; predicting it as stored')
        filtering = args.temporal_filter != 'off'
        request = None if intrinsics is None else PointsRequest(
            intrinsics=tuple(float(v) for v in intrinsics), stride=args.points_stride,
            max_range_m=math.inf if filtering else max_range_m, with_rgb=True)
        result = engine.infer(rgb, anchors, points=request)

        base = args.out / path.stem
        depth = result.depth_m.astype(np.float32, copy=False)
        cloud = result.points_m
        if filtering:
            filtered = stream.apply(depth, anchors, motion)
            if cloud is not None:
                cloud = move_points(cloud, depth, filtered, args.points_stride, max_range_m)
            depth = filtered
        np.save(f'{base}_depth.npy', depth)
        write_depth_png_mm(f'{base}_depth_mm.png', depth)
        write_rgb_png(f'{base}_depth.png', depth_figure(depth))
        if not cv2.imwrite(f'{base}_mask.png', result.near.astype(np.uint8) * np.uint8(255)):
            raise OSError(f'could not write {base}_mask.png')
        points = None
        if cloud is not None:
            points = write_ply(f'{base}.ply', cloud, result.points_rgb)
        progress.write(_summary_line(path, depth, result, points))
    print(f'wrote {len(args.images)} image(s) to {args.out}/ (anchors '
          f'{", ".join(f"{a:g}" for a in anchors)} m, device {engine.device}, temporal filter '
          f'{args.temporal_filter}{", camera still" if motion is not None else ""})')
    return 0


def _summary_line(path: pathlib.Path, depth_m: Any, result: Any, points: int | None) -> str:
    """One line per image: size, depth range [m], near share, time [ms], PLY points."""
    import numpy as np

    finite = depth_m[np.isfinite(depth_m)]
    span = (f'depth {finite.min():.2f}..{finite.max():.2f} m (median {np.median(finite):.2f})'
            if finite.size else 'no finite depth')
    cloud = '' if points is None else f', {points} points'
    return (f'{path.name}: {depth_m.shape[1]}x{depth_m.shape[0]} px, {span}, near '
            f'{100.0 * result.near.mean():.0f}%, {result.timings_ms.get("total", 0.0):.0f} ms'
            f'{cloud}')
