"""A motion-safe temporal filter for depth streams: ``off``, ``scale`` or ``full``.

Pure numpy (and OpenCV's SIMD arithmetic) and free of rclpy: the node, ``metric-solver eval``
and ``predict`` share it. One :class:`TemporalFilter` per stream (per camera and result); feed
the frames in order.

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

**Stillness hint** (``apply(..., camera_motion=...)``, :class:`CameraMotion`: how the camera
moved since the previous frame, from odometry or /tf; None = unknown, the blind path above).
Blind, a still camera's slow scale wobble (the model following exposure drift) cannot be told
from approaching or receding, so it is followed. Told the camera is still, the filter *holds*:

- the camera counts as still while its net motion since a reference frame stays within
  ``still_translation_m`` and ``still_rotation_rad``; the net motion, not the per-frame one,
  because a mount's vibration (zero-mean, up to 1 deg between frames outdoors in the synthetic
  sequences) is as large per frame as a slow pan (from 0.26 deg), but does not add up; the hold
  starts once that held for ``still_frames`` frames (a pan is out of the bounds by then);
- held, the pixels see the same surfaces as in the reference frame, so the level ``L_t`` is
  measured against that frame directly (no chain of per-frame steps that random-walks): the
  ratio of the median depths over the sampled pixels that kept their structure (within
  ``cut_log`` of the median ratio, so that a person walking in is left out). The median
  depth, not the median ratio: it is what stays put for a still scene (a model's exposure
  response is not uniform over depth, and the median ratio then drifts). ``X`` starts where the
  output was and moves towards these levels by ``hold_gain`` a frame; ``v`` is 0. A moving or
  unknown frame ends the hold (the alpha-beta path goes on from ``X``); scene cuts and anchor
  resets work as blind.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

MODES = ('off', 'scale', 'full')
#: Pixels per block of the per-pixel pass (its scratch arrays stay in the L2 cache).
_BLOCK_PX = 65_536
#: Odometry older (or newer) than this [s] than an image says nothing about it: unknown motion.
ODOMETRY_STALE_S = 0.5


class CameraMotion(NamedTuple):
    """How the camera moved since the previous frame: ``T_prev_cur``, in the previous frame.

    The previous camera's frame, or any rigidly attached one (odometry's ``base_link``): the
    stillness test reads distances and angles only.

    Attributes:
        translation_m: ``(x, y, z)`` [m].
        rotation_rad: Rotation vector ``(x, y, z)`` [rad]: the axis times the angle.
    """

    translation_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_rad: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def between(cls, pose_prev: np.ndarray, pose_cur: np.ndarray) -> CameraMotion:
        """The motion between two 4x4 camera-to-world poses (e.g. from a bag's /tf)."""
        from transforms3d.axangles import mat2axangle

        relative = np.linalg.inv(np.asarray(pose_prev, float)) @ np.asarray(pose_cur, float)
        axis, angle = mat2axangle(relative[:3, :3])
        return cls(tuple(float(v) for v in relative[:3, 3]),
                   tuple(float(v) for v in np.asarray(axis) * angle))

    @classmethod
    def from_twist(cls, linear_mps: Sequence[float], angular_radps: Sequence[float],
                   interval_s: float) -> CameraMotion:
        """The motion at a constant twist (odometry) over ``interval_s`` [s].

        Args:
            linear_mps: Linear velocity ``(x, y, z)`` [m/s].
            angular_radps: Angular velocity ``(x, y, z)`` [rad/s].
            interval_s: Time since the previous frame [s].
        """
        return cls(tuple(float(v) * interval_s for v in linear_mps),
                   tuple(float(w) * interval_s for w in angular_radps))

    def matrix(self) -> np.ndarray:
        """The 4x4 transform ``T_prev_cur``."""
        from transforms3d.axangles import axangle2mat

        out = np.eye(4)
        angle = float(np.linalg.norm(self.rotation_rad))
        if angle > 0.0:  # (the axis of no rotation is undefined)
            out[:3, :3] = axangle2mat(self.rotation_rad, angle)
        out[:3, 3] = self.translation_m
        return out


class MotionFromOdometry:
    """Camera motion between consecutive images from the latest odometry twist (no rclpy).

    The node stores each odometry message's stamp and twist (:meth:`add`, any thread) and asks
    for every image's motion (:meth:`motion`, in image order): the latest twist times the time
    since the previous image; None (unknown) before any odometry, for the first image, when the
    odometry's stamp is more than :data:`ODOMETRY_STALE_S` from the image's, or when the stamps
    go back.
    """

    def __init__(self) -> None:
        self._latest: tuple[int, tuple[float, ...], tuple[float, ...]] | None = None
        self._image_ns: int | None = None

    def add(self, stamp_ns: int, linear_mps: Sequence[float],
            angular_radps: Sequence[float]) -> None:
        """Store an odometry message: its stamp [ns] and twist ([m/s], [rad/s])."""
        self._latest = (int(stamp_ns), tuple(map(float, linear_mps)),
                        tuple(map(float, angular_radps)))  # one assignment: thread-safe

    def motion(self, image_stamp_ns: int) -> CameraMotion | None:
        """The camera's motion since the previous image, or None when unknown."""
        previous, self._image_ns = self._image_ns, int(image_stamp_ns)
        latest = self._latest
        if (latest is None or previous is None or image_stamp_ns < previous
                or abs(image_stamp_ns - latest[0]) > ODOMETRY_STALE_S * 1e9):
            return None
        return CameraMotion.from_twist(latest[1], latest[2], (image_stamp_ns - previous) / 1e9)


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
        still_translation_m: Hint: largest net translation [m] since the reference frame of a
            still camera (above the up to 14 mm a shaking mount nets between two frames; 2 cm
            changes the depth of a surface 2 m ahead by 1 %).
        still_rotation_rad: Hint: largest net rotation [rad] since the reference (1 deg: above
            the vibration of a still synthetic camera, whose net turn between two frames
            exceeds 1 deg once in 200; a 1 deg turn shifts the image by 1.7 % of the focal
            length, so the sampled pixels still see the same surfaces).
        still_frames: Hint: frames the camera must stay within those bounds before the hold
            starts (2: a pan of 8 deg/s or more at 10 Hz has left them by then, 1.6 deg, with
            the vibration about 1 time in 25; with 1, pans were held every other frame; with
            3, static sequences lost the hold of their first frames, scale_jitter x0.55
            instead of x0.27 on seed 5).
        hold_gain: Hint: share of a held frame's level difference taken into the held scale
            (0.02: a time constant of 50 frames, 5 s at 10 Hz, longer than the exposure
            drift's period; 0 holds the scale where it was).
    """

    scale_gain: float = 0.25
    trend_gain: float = 0.02
    pixel_keep: float = 0.75
    pixel_static_tol: float = 0.1
    cut_log: float = math.log(1.25)
    cut_fraction: float = 0.5
    jump_log: float = 0.3
    sample_px: int = 10_000
    still_translation_m: float = 0.02
    still_rotation_rad: float = math.radians(1.0)
    still_frames: int = 2
    hold_gain: float = 0.02

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
        if not (self.still_translation_m >= 0 and self.still_rotation_rad >= 0):
            raise ValueError('still_translation_m and still_rotation_rad must be >= 0')
        if self.still_frames < 1:
            raise ValueError(f'still_frames must be >= 1, got {self.still_frames}')
        if not 0.0 <= self.hold_gain <= 1.0:
            raise ValueError(f'hold_gain must be in [0, 1], got {self.hold_gain}')


class _Hold:
    """The stillness hint's state: the reference frame and the held scale."""

    def __init__(self, sample_log: np.ndarray, raw_log: float) -> None:
        self.sample_log = sample_log  # ln depth of the reference frame's sampled pixels
        self.raw_log = raw_log  # its raw log scale L
        self.pose = np.eye(4)  # T_reference_current
        self.frames = 0  # frames since the reference, all within the still bounds
        self.level: float | None = None  # the held X, from the first held frame on


class TemporalFilter:
    """Filter one depth stream (module docstring).

    Args:
        mode: ``'off'``, ``'scale'`` or ``'full'``.
        settings: Tuning; the defaults suit 5-30 Hz streams.

    Attributes:
        last_reset: Why the filter last started a new history (``'start'``, ``'reset'``,
            ``'anchor'``, ``'size'``, ``'cut'``); for logs and tests.
        held: Whether the last frame's scale was held (the stillness hint); for logs and tests.
    """

    def __init__(self, mode: str = 'scale', settings: TemporalFilterSettings | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f'temporal filter mode must be one of {MODES}, got {mode!r}')
        self.mode = mode
        self.settings = settings or TemporalFilterSettings()
        self._anchor: object = None
        self.reset()
        self.last_reset = 'start'

    def reset(self) -> None:
        """Forget the history: the next frame passes unchanged."""
        self._sample_log: np.ndarray | None = None  # ln depth of the sampled pixels, last frame
        self._shape: tuple[int, ...] = ()
        self._stride = 1
        self._raw_log = 0.0  # L: the raw log scale (running sum of frame-to-frame changes)
        self._smooth_log = 0.0  # X
        self._trend = 0.0  # v [ln per frame]
        self._hold: _Hold | None = None  # the stillness hint's reference, while still
        self._pixels: np.ndarray | None = None  # full: filtered depth of the last frame
        self._scratch: tuple[np.ndarray, ...] = ()
        self.held = False
        self.last_reset = 'reset'

    def apply(self, depth_m: np.ndarray, anchor_m: object = None,
              camera_motion: CameraMotion | None = None) -> np.ndarray:
        """Filter the next frame.

        Args:
            depth_m: float HxW depth [m] (+inf too far, NaN undefined); not modified.
            anchor_m: The anchor (or tuple of anchors) it was decoded at; a change resets.
            camera_motion: How the camera moved since the previous frame (odometry, /tf), or
                None when unknown (the blind filter).

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
        step = self._step(sample_log)
        if step is None:
            return self._cut(depth)
        hold = self._track(camera_motion)
        level = None
        if hold is not None and hold.frames >= self.settings.still_frames:
            level = self._held_level(hold, sample_log)
        raw_log = self._raw_log + step if level is None else level
        innovation = raw_log - (self._smooth_log + self._trend)
        settings = self.settings
        if abs(innovation) > settings.jump_log:
            return self._cut(depth)
        before = self._smooth_log
        self.held = level is not None
        if hold is not None and not self.held and hold.frames >= settings.still_frames:
            self._hold = None  # no level against the reference: this frame is the next one
        if self.held:  # pulled slowly from where the output was towards the measured level
            held = before if hold.level is None else hold.level
            hold.level = held + settings.hold_gain * (raw_log - held)
            self._smooth_log, self._trend = hold.level, 0.0
        else:
            self._smooth_log += self._trend + settings.scale_gain * innovation
            self._trend += settings.trend_gain * innovation
        self._raw_log = raw_log
        self._sample_log = sample_log
        factor = np.float32(math.exp(self._smooth_log - raw_log))
        if self.mode == 'scale':
            return np.multiply(depth, factor)
        out = np.empty_like(depth)
        with np.errstate(invalid='ignore', divide='ignore'):
            self._blend_static(depth, factor, np.float32(math.exp(self._smooth_log - before)),
                               out)
        return out

    def _start(self, depth: np.ndarray) -> np.ndarray:
        """First frame of a history: remember it, pass it unchanged."""
        self._shape = depth.shape
        self._stride = max(1, math.ceil(math.sqrt(depth.size / self.settings.sample_px)))
        self._sample_log = self._log_sample(depth)
        if self.mode == 'full':
            self._pixels = depth.copy()
            block = (max(1, _BLOCK_PX // depth.shape[1]), depth.shape[1])
            self._scratch = (*(np.empty(block, np.float32) for _ in range(2)),
                             np.empty(block, np.uint8))
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

    def _step(self, sample_log: np.ndarray) -> float | None:
        """The raw frame-to-frame log scale change ``m_t``, or None for a scene cut."""
        with np.errstate(invalid='ignore'):  # inf - inf: not comparable, left out below
            change = sample_log - self._sample_log
        finite = np.isfinite(change)
        if finite.sum() * 10 < finite.size:
            return None
        change = change[finite]
        step = float(np.partition(change, change.size // 2)[change.size // 2])
        # Structure, not scale: a pixel changed when it moved away from the global change.
        changed = np.count_nonzero(np.abs(change - np.float32(step)) > self.settings.cut_log)
        return None if changed > self.settings.cut_fraction * change.size else step

    def _track(self, camera_motion: CameraMotion | None) -> _Hold | None:
        """The hold's state when the camera is within the still bounds of its reference.

        None when the motion is unknown or beyond the bounds: then this frame becomes the
        reference of the next one (the motion a hint gives is relative to the last frame).
        """
        if camera_motion is None:
            self._hold = None
            return None
        hold = self._hold
        if hold is None:
            hold = _Hold(self._sample_log, self._raw_log)
        pose = hold.pose @ CameraMotion(*camera_motion).matrix()
        cos_angle = (float(np.trace(pose[:3, :3])) - 1.0) / 2.0
        settings = self.settings
        if (float(np.linalg.norm(pose[:3, 3])) > settings.still_translation_m
                or cos_angle < math.cos(min(settings.still_rotation_rad, math.pi))):
            self._hold = None
            return None
        hold.pose = pose
        hold.frames += 1
        self._hold = hold
        return hold

    def _held_level(self, hold: _Hold, sample_log: np.ndarray) -> float | None:
        """The raw log scale measured against the hold's reference frame (module docstring).

        None when too few sampled pixels are comparable with the reference.
        """
        with np.errstate(invalid='ignore'):
            change = sample_log - hold.sample_log
        same = np.isfinite(change)
        if same.sum() * 10 < same.size:
            return None
        middle = np.median(change[same])
        same[same] = np.abs(change[same] - middle) <= self.settings.cut_log  # movers left out
        return hold.raw_log + float(np.median(sample_log[same]) - np.median(hold.sample_log[same]))

    def _blend_static(self, depth: np.ndarray, factor: np.float32, moved: np.float32,
                      out: np.ndarray) -> None:
        """``full``: the scale step, then static pixels blended with the last filtered frame.

        Seven single passes over each row block (OpenCV's SIMD kernels where numpy has none):
        ``f = d * factor``; ``b = (1 - keep) f + keep * moved * p`` (the blend); ``c = |b -
        f|``, which is ``keep * |moved * p - f|``; ``static = c < keep * tol * f`` (false
        wherever a NaN or an infinity is involved: then ``c`` is NaN or inf); ``f = b`` on
        static pixels (a masked copy: the others, NaN and +inf included, stay as they are);
        ``p = f``.

        Args:
            depth: This frame [m].
            factor: Its scale correction.
            moved: Factor of the global scale change since the last frame (the last frame is
                carried forward by it first, so a steady approach is not lagged behind).
            out: Where the result goes, shaped like ``depth``.
        """
        import cv2  # here: the node runs without OpenCV unless `full` (or an encoding) needs it

        keep = float(self.settings.pixel_keep)
        limit = np.float32(keep * self.settings.pixel_static_tol)
        rows = self._scratch[0].shape[0]
        for top in range(0, out.shape[0], rows):  # row blocks: the scratch stays in cache
            frame, pixels = out[top:top + rows], self._pixels[top:top + rows]
            blend, change, static = (a[:frame.shape[0]] for a in self._scratch)
            np.multiply(depth[top:top + rows], factor, out=frame)
            cv2.addWeighted(frame, 1.0 - keep, pixels, keep * float(moved), 0.0, dst=blend)
            cv2.absdiff(blend, frame, dst=change)
            np.multiply(frame, limit, out=pixels)  # the last frame is no longer needed
            cv2.compare(change, pixels, cv2.CMP_LT, dst=static)
            cv2.copyTo(blend, static, frame)
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
