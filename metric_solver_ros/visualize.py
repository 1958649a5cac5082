"""Pictures and files for humans: colour-mapped depth with a metric colour bar, PLY clouds.

Used by ``metric-solver predict``, the demo and the evaluation report. Colours follow depth on a
log scale (near-field detail stays visible next to far structure); +inf (beyond the far limit,
e.g. sky) is drawn black and NaN (undefined) grey, and the bar says so.
"""

from __future__ import annotations

import math
import pathlib

import cv2
import numpy as np

INF_COLOUR = (0, 0, 0)
NAN_COLOUR = (128, 128, 128)


def depth_range_m(depth_m: np.ndarray) -> tuple[float, float]:
    """A robust display range [m]: 1st-99th percentile of the finite depths."""
    finite = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if finite.size == 0:
        return 0.1, 100.0
    low, high = np.percentile(finite, [1, 99])
    low = max(float(low), 1e-3)
    return low, max(float(high), low * 1.5)


def colorize_depth(depth_m: np.ndarray, min_m: float | None = None,
                   max_m: float | None = None) -> np.ndarray:
    """Map depth [m] to RGB with the turbo colour map on a log scale (near = red, far = blue).

    Args:
        depth_m: float [H, W] depth [m]; +inf and NaN get their own colours.
        min_m: Depth [m] of the first colour (default: robust range of the image).
        max_m: Depth [m] of the last colour.

    Returns:
        uint8 [H, W, 3] RGB.
    """
    low, high = depth_range_m(depth_m)
    low, high = min_m or low, max_m or high
    with np.errstate(invalid='ignore', divide='ignore'):
        t = (np.log(np.clip(depth_m, low, high)) - math.log(low)) / (math.log(high) - math.log(low))
    index = np.nan_to_num(255.0 * (1.0 - t), nan=0.0).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(index, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[np.isposinf(depth_m)] = INF_COLOUR
    rgb[np.isnan(depth_m)] = NAN_COLOUR
    return rgb


def with_colour_bar(rgb: np.ndarray, min_m: float, max_m: float, width_px: int = 70) -> np.ndarray:
    """Append a vertical metric colour bar (log ticks, +inf and NaN swatches) to an image.

    Args:
        rgb: uint8 [H, W, 3] colour-mapped depth.
        min_m: Depth [m] of the first colour.
        max_m: Depth [m] of the last colour.
        width_px: Width of the bar panel [px].

    Returns:
        uint8 [H, W + width_px, 3].
    """
    height = rgb.shape[0]
    panel = np.full((height, width_px, 3), 255, np.uint8)
    swatch = max(10, height // 12)
    top, bottom = 4, height - 2 * swatch - 8
    if bottom - top > 10:
        depths = np.exp(np.linspace(math.log(min_m), math.log(max_m), bottom - top))
        column = colorize_depth(depths[:, None].astype(np.float32), min_m, max_m)
        panel[top:bottom, 4:18] = column
        scale = max(0.3, min(0.45, height / 900))
        for value in nice_ticks(min_m, max_m):
            y = top + int(round((math.log(value) - math.log(min_m)) /
                                (math.log(max_m) - math.log(min_m)) * (bottom - top - 1)))
            cv2.line(panel, (18, y), (22, y), (0, 0, 0), 1)
            cv2.putText(panel, f'{value:g} m', (24, y + 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
        for i, (colour, label) in enumerate([(INF_COLOUR, 'inf'), (NAN_COLOUR, 'NaN')]):
            y0 = bottom + 4 + i * swatch
            panel[y0:y0 + swatch - 2, 4:18] = colour
            cv2.putText(panel, label, (24, y0 + swatch - 4), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([rgb, panel], axis=1)


def nice_ticks(min_m: float, max_m: float, min_count: int = 3) -> list[float]:
    """Round tick values [m] inside ``[min_m, max_m]`` for a log-scale colour bar.

    1, 2, 5 x 10^n; where that gives fewer than ``min_count`` (a narrow range such as 1.4-4.5 m),
    every 1-9 x 10^n, then halves (1.5, 2.5, ...) as well.
    """
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9),
                      (1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9)):
        ticks = []
        for exponent in range(math.floor(math.log10(min_m)), math.ceil(math.log10(max_m)) + 1):
            for mantissa in mantissas:
                value = float(f'{mantissa * 10.0 ** exponent:.6g}')
                if min_m <= value <= max_m:
                    ticks.append(value)
        if len(ticks) >= min_count:
            break
    return ticks


def depth_figure(depth_m: np.ndarray, min_m: float | None = None,
                 max_m: float | None = None) -> np.ndarray:
    """Colour-mapped depth with its metric colour bar, as uint8 RGB."""
    low, high = depth_range_m(depth_m)
    low, high = min_m or low, max_m or high
    return with_colour_bar(colorize_depth(depth_m, low, high), low, high)


def write_rgb_png(path: str | pathlib.Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (raises OSError when it cannot)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')


def write_depth_png_mm(path: str | pathlib.Path, depth_m: np.ndarray) -> None:
    """Write depth as a 16-bit PNG in millimetres (0 = NaN, +inf or beyond 65.535 m)."""
    mm = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0.0)
    mm = np.where(mm > 65535, 0, mm).astype(np.uint16)
    if not cv2.imwrite(str(path), mm):
        raise OSError(f'could not write {path}')


def write_ply(path: str | pathlib.Path, xyz_m: np.ndarray, rgb: np.ndarray | None = None) -> int:
    """Write the finite points of a cloud as a binary little-endian PLY.

    Args:
        path: Output file.
        xyz_m: float [..., 3] points [m] (NaN rows are skipped).
        rgb: Optional uint8 [..., 3] colours.

    Returns:
        The number of points written.
    """
    points = xyz_m.reshape(-1, 3).astype('<f4')
    keep = np.isfinite(points).all(axis=1)
    fields = [('x', '<f4'), ('y', '<f4'), ('z', '<f4')]
    if rgb is not None:
        fields += [('red', 'u1'), ('green', 'u1'), ('blue', 'u1')]
    vertices = np.empty(int(keep.sum()), dtype=fields)
    for i, name in enumerate('xyz'):
        vertices[name] = points[keep, i]
    if rgb is not None:
        colours = rgb.reshape(-1, 3)[keep]
        for i, name in enumerate(('red', 'green', 'blue')):
            vertices[name] = colours[:, i]
    properties = ''.join(
        f'property {"float" if kind == "<f4" else "uchar"} {name}\n' for name, kind in fields)
    header = (f'ply\nformat binary_little_endian 1.0\ncomment metric_solver_ros, metres, '
              f'camera optical frame\nelement vertex {len(vertices)}\n{properties}end_header\n')
    with open(path, 'wb') as stream:
        stream.write(header.encode('ascii'))
        stream.write(vertices.tobytes())
    return len(vertices)


def read_ply(path: str | pathlib.Path) -> np.ndarray:
    """Read a PLY written by :func:`write_ply` (structured array of its vertices)."""
    data = pathlib.Path(path).read_bytes()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    header = data[:end].decode('ascii').splitlines()
    fields = []
    for line in header:
        if line.startswith('property'):
            _, kind, name = line.split()
            fields.append((name, '<f4' if kind == 'float' else 'u1'))
    return np.frombuffer(data[end:], dtype=fields)
