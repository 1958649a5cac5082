"""A motion-safe temporal filter for depth streams: ``off``, ``scale`` or ``full``.

Pure numpy and free of rclpy: the node, ``metric-solver eval`` and ``predict`` share it. One
:class:`TemporalFilter` per stream (per camera and result); feed the frames in order.

``scale`` smooths the global scale, the part of monocular flicker that hurts mapping most:

1. The raw frame-to-frame scale change ``m_t`` is the median over a pixel sample (about
   ``sample_px`` pixels on a regular grid) of ``ln(d_t / d_t-1)`` at the same pixel. A median of
   ratios ignores what moves in part of the image (a person walking in), unlike the median depth.
2. Their running sum, the raw log scale ``L_t``, is tracked by an alpha-beta (constant-velocity)
   filter: ``X = X + v + a r``, ``v = v + b r`` with ``r = L_t - (X + v)``. The trend ``v``
   follows steady real changes (walking towards a wall) without lag, so the filter is
   motion-safe; ``a`` and ``b`` set how much frame-to-frame wobble is removed (the defaults
   take the std of a white wobble to about 0.4x; slow drift is followed, as real motion is).
3. The frame is multiplied by ``exp(X - L_t)``: one multiplication per pixel.

``full`` also smooths each pixel where the scene is static: after the scale step, the previous
filtered frame is carried forward by the output's global scale change (a steady approach is not
lagged behind), and a pixel within ``pixel_static_tol`` (relative) of it becomes
``(1 - pixel_keep) d + pixel_keep * previous``; any other pixel (something moved, or an edge
passed) takes the new depth as it is. NaN and +inf pass through unchanged.

Resets (the next frame passes unchanged and starts a new history): :meth:`TemporalFilter.reset`,
an anchor other than the last one, an image of another size, and a scene cut: more than
``cut_fraction`` of the sampled pixels changed by more than ``cut_log`` in ln depth relative to
the frame's global change ``m_t`` (structure changed, not scale), fewer than a tenth of them
comparable, or a global jump ``|r|`` beyond ``jump_log``. A new room is never blended with the
old one.

Cost: O(pixels), a few vectorised passes in float32 (``benchmarks/temporal_filter.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODES = ('off', 'scale', 'full')
#: Pixels per block of the per-pixel pass (its scratch arrays stay in the L2 cache).
_BLOCK_PX = 65_536


@dataclass(frozen=True)
class TemporalFilterSettings:
    """Tuning of :class:`TemporalFilter` (module docstring).

    Attributes:
        scale_gain: ``a``: share of a frame's scale innovation taken at once (0..1].
        trend_gain: ``b``: share taken into the scale trend [0..a).
        pixel_keep: ``full``: weight of the past on a static pixel [0..1).
        pixel_static_tol: ``full``: largest relative change of a static pixel.
        cut_log: A sampled pixel whose ``|ln change - m_t|`` exceeds this counts as changed.
        cut_fraction: Share of changed pixels that makes a scene cut.
        jump_log: A global scale innovation ``|r|`` beyond this is a scene cut.
        sample_px: About how many pixels are sampled for the scale and the cut test.
    """

    scale_gain: float = 0.25
    trend_gain: float = 0.02
    pixel_keep: float = 0.75
    pixel_static_tol: float = 0.1
    cut_log: float = math.log(1.25)
    cut_fraction: float = 0.5
    jump_log: float = 0.3
    sample_px: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_gain <= 1.0:
            raise ValueError(f'scale_gain must be in (0, 1], got {self.scale_gain}')
        if not 0.0 <= self.trend_gain < self.scale_gain:
            raise ValueError(f'trend_gain must be in [0, scale_gain), got {self.trend_gain}')
        if not 0.0 <= self.pixel_keep < 1.0:
            raise ValueError(f'pixel_keep must be in [0, 1), got {self.pixel_keep}')
        if not self.pixel_static_tol > 0.0:
            raise ValueError(f'pixel_static_tol must be > 0, got {self.pixel_static_tol}')
        if not (self.cut_log > 0 and 0 < self.cut_fraction <= 1 and self.jump_log > 0):
            raise ValueError('cut_log, cut_fraction (<= 1) and jump_log must be > 0')
        if self.sample_px < 100:
            raise ValueError(f'sample_px must be >= 100, got {self.sample_px}')


class TemporalFilter:
    """Filter one depth stream (module docstring).

    Args:
        mode: ``'off'``, ``'scale'`` or ``'full'``.
        settings: Tuning; the defaults suit 5-30 Hz streams.

    Attributes:
        last_reset: Why the filter last started a new history (``'start'``, ``'reset'``,
            ``'anchor'``, ``'size'``, ``'cut'``); for logs and tests.
    """

    def __init__(self, mode: str = 'scale', settings: TemporalFilterSettings | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f'temporal filter mode must be one of {MODES}, got {mode!r}')
        self.mode = mode
        self.settings = settings or TemporalFilterSettings()
        self.last_reset = 'start'
        self._anchor: object = None
        self.reset()
        self.last_reset = 'start'

    def reset(self) -> None:
        """Forget the history: the next frame passes unchanged."""
        self._sample_log: np.ndarray | None = None  # ln depth of the sampled pixels, last frame
        self._shape: tuple[int, ...] = ()
        self._stride = 1
        self._raw_log = 0.0  # L: running sum of the raw frame-to-frame log scale changes
        self._smooth_log = 0.0  # X
        self._trend = 0.0  # v [ln per frame]
        self._pixels: np.ndarray | None = None  # full: filtered depth of the last frame
        self._scratch: tuple[np.ndarray, ...] = ()
        self.last_reset = 'reset'

    def apply(self, depth_m: np.ndarray, anchor_m: object = None) -> np.ndarray:
        """Filter the next frame.

        Args:
            depth_m: float HxW depth [m] (+inf too far, NaN undefined); not modified.
            anchor_m: The anchor (or tuple of anchors) it was decoded at; a change resets.

        Returns:
            float32 HxW filtered depth [m]; with ``off``, and on a frame that starts a new
            history, the input itself (as float32).
        """
        depth = np.asarray(depth_m, dtype=np.float32)
        if self.mode == 'off':
            return depth
        if depth.ndim != 2:
            raise ValueError(f'expected an HxW depth image, got shape {depth.shape}')
        if self._sample_log is not None:
            if anchor_m != self._anchor:
                self.reset()
                self.last_reset = 'anchor'
            elif depth.shape != self._shape:
                self.reset()
                self.last_reset = 'size'
        self._anchor = anchor_m
        if self._sample_log is None:
            return self._start(depth)
        sample_log = self._log_sample(depth)
        with np.errstate(invalid='ignore'):  # inf - inf: not comparable, left out below
            change = sample_log - self._sample_log
        finite = np.isfinite(change)
        settings = self.settings
        if finite.sum() * 10 < finite.size:
            return self._cut(depth)
        change = change[finite]
        step = float(np.partition(change, change.size // 2)[change.size // 2])
        # Structure, not scale: a pixel changed when it moved away from the global change.
        changed = np.count_nonzero(np.abs(change - np.float32(step)) > settings.cut_log)
        if changed > settings.cut_fraction * change.size:
            return self._cut(depth)
        raw_log = self._raw_log + step
        innovation = raw_log - (self._smooth_log + self._trend)
        if abs(innovation) > settings.jump_log:
            return self._cut(depth)
        moved_log = self._trend + settings.scale_gain * innovation  # output's change of scale
        self._smooth_log += moved_log
        self._trend += settings.trend_gain * innovation
        self._raw_log = raw_log
        self._sample_log = sample_log
        factor = np.float32(math.exp(self._smooth_log - raw_log))
        if self.mode == 'scale':
            return np.multiply(depth, factor)
        out = np.empty_like(depth)
        with np.errstate(invalid='ignore'):
            self._blend_static(depth, factor, np.float32(math.exp(moved_log)), out)
        return out

    def _start(self, depth: np.ndarray) -> np.ndarray:
        """First frame of a history: remember it, pass it unchanged."""
        self._shape = depth.shape
        self._stride = max(1, math.ceil(math.sqrt(depth.size / self.settings.sample_px)))
        self._sample_log = self._log_sample(depth)
        if self.mode == 'full':
            self._pixels = depth.copy()
            block = (max(1, _BLOCK_PX // depth.shape[1]), depth.shape[1])
            self._scratch = (*(np.empty(block, np.float32) for _ in range(3)),
                             np.empty(block, bool), np.empty(block, np.int32))
        return depth

    def _cut(self, depth: np.ndarray) -> np.ndarray:
        """A scene cut: start a new history with this frame."""
        self.reset()
        self.last_reset = 'cut'
        return self._start(depth)

    def _log_sample(self, depth: np.ndarray) -> np.ndarray:
        """Log depth on the sampling grid (NaN / inf where the depth is no positive number)."""
        with np.errstate(divide='ignore', invalid='ignore'):
            return np.log(depth[::self._stride, ::self._stride])

    def _blend_static(self, depth: np.ndarray, factor: np.float32, moved: np.float32,
                      out: np.ndarray) -> None:
        """``full``: the scale step, then static pixels blended with the last filtered frame.

        Args:
            depth: This frame [m].
            factor: Its scale correction.
            moved: Factor of the global scale change since the last frame (the last frame is
                carried forward by it first, so a steady approach is not lagged behind).
            out: Where the result goes, shaped like ``depth``.
        """
        tol = np.float32(self.settings.pixel_static_tol)
        keep = np.float32(self.settings.pixel_keep)
        rows = self._scratch[0].shape[0]
        for top in range(0, out.shape[0], rows):  # row blocks: the scratch stays in cache
            frame, pixels = out[top:top + rows], self._pixels[top:top + rows]
            diff, size, bound, static, keep_bits = (a[:frame.shape[0]] for a in self._scratch)
            np.multiply(depth[top:top + rows], factor, out=frame)
            np.multiply(pixels, moved, out=diff)
            diff -= frame
            np.abs(diff, out=size)
            np.multiply(frame, tol, out=bound)
            np.less(size, bound, out=static)  # False wherever NaN or +inf is involved
            # Zero the non-static differences bit-wise: NaN * 0 stays NaN, NaN & 0 is 0.0.
            np.copyto(keep_bits, static, casting='unsafe')  # 0 / 1 (a fast widening copy)
            np.negative(keep_bits, out=keep_bits)  # 0 / all bits set
            np.bitwise_and(diff.view(np.int32), keep_bits, out=diff.view(np.int32))
            diff *= keep
            frame += diff  # non-static pixels: + 0.0, so NaN and +inf stay as they are
            np.copyto(pixels, frame)


def move_points(points_m: np.ndarray, raw_m: np.ndarray, filtered_m: np.ndarray, stride: int,
                max_range_m: float) -> np.ndarray:
    """Move organised points along their rays from the raw to the filtered depth.

    Args:
        points_m: float [h, w, 3] camera-frame points [m] of every ``stride``-th pixel.
        raw_m: The depth [m] they were back-projected from, [H, W].
        filtered_m: The filtered depth [m], [H, W].
        stride: Pixel stride of the points.
        max_range_m: Points farther than this [m] become NaN.

    Returns:
        The moved points, float32 [h, w, 3] (NaN where either depth is not finite).
    """
    with np.errstate(invalid='ignore', divide='ignore'):
        factor = filtered_m[::stride, ::stride] / raw_m[::stride, ::stride]
        moved = points_m * factor[..., None].astype(np.float32)
        if math.isfinite(max_range_m):
            moved[np.linalg.norm(moved, axis=-1) > max_range_m] = np.nan
    return moved
