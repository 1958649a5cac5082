"""Automatic anchor selection: ``auto`` (whole scene) and ``roi`` (an image region).

Both modes pick a *pool* anchor for the next frame from the depth of the previous one, so they add
no network work. The rules (README, "Anchor modes"):

- The scene depth ``s`` is a percentile (``percentile``, default 90) of the finite depths in the
  whole image (``auto``) or in the region of interest (``roi``, default 95th). Pixels at +inf (sky)
  and NaN are ignored; with no finite pixel the largest pool anchor is wanted.
- The wanted anchor is the smallest pool anchor ``a >= s``: the finest near-field resolution that
  still puts the scene (or region) inside the near branch.
- Hysteresis: moving UP happens as soon as ``s`` exceeds the current anchor (the scene spills out
  of the near field); moving DOWN needs ``s <= margin * wanted`` (default margin 0.8, so the scene
  sits well inside the smaller anchor) — otherwise the current anchor stays. A change in either
  direction must be wanted for ``patience`` consecutive frames (default 2) before it happens.
  Together these stop the anchor from flickering when the scene depth hovers at a pool boundary.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MODES = ('fixed', 'auto', 'roi')


class RoiOutsideImage(ValueError):
    """The region of interest has no pixel in the image: nothing to choose an anchor from."""


@dataclass
class AnchorSelectorSettings:
    """Tuning of :class:`AnchorSelector` (defaults documented in the module docstring)."""

    auto_percentile: float = 90.0
    roi_percentile: float = 95.0
    down_margin: float = 0.8
    patience: int = 2


class AnchorSelector:
    """Stateful anchor choice for ``auto`` and ``roi`` modes.

    Args:
        pool_m: The model's anchor pool [m], ascending.
        initial_m: The anchor in effect before the first frame [m].
        settings: Percentiles, hysteresis margin and patience.
    """

    def __init__(self, pool_m: Sequence[float], initial_m: float,
                 settings: AnchorSelectorSettings | None = None) -> None:
        self.pool_m = tuple(sorted(float(a) for a in pool_m))
        self.settings = settings or AnchorSelectorSettings()
        self.current_m = float(initial_m)
        self._pending_m: float | None = None
        self._pending_frames = 0

    def reset(self, anchor_m: float) -> None:
        """Set the current anchor (e.g. when the user sets one) and forget pending changes."""
        self.current_m = float(anchor_m)
        self._pending_m, self._pending_frames = None, 0

    def smallest_covering(self, depth_m: float) -> float:
        """The smallest pool anchor >= ``depth_m`` (the largest when none is)."""
        index = bisect.bisect_left(self.pool_m, depth_m)
        return self.pool_m[min(index, len(self.pool_m) - 1)]

    def scene_depth(self, depth_m: np.ndarray, roi: tuple[int, int, int, int] | None) -> float:
        """The percentile depth [m] of finite pixels in the image or in ``roi`` (x, y, w, h).

        Returns:
            The depth, or +inf when there is no finite pixel.

        Raises:
            RoiOutsideImage: ``roi`` has no pixel in the image (e.g. set for a larger camera).
        """
        percentile = self.settings.auto_percentile
        if roi is not None:
            x, y, w, h = roi
            height, width = depth_m.shape[:2]
            depth_m = depth_m[max(y, 0):max(y + h, 0), max(x, 0):max(x + w, 0)]
            if depth_m.size == 0:
                raise RoiOutsideImage(f'roi (x {x}, y {y}, {w}x{h}) has no pixel in the '
                                      f'{width}x{height} image')
            percentile = self.settings.roi_percentile
        finite = depth_m[np.isfinite(depth_m)]
        if finite.size == 0:
            return float('inf')
        return float(np.percentile(finite, percentile))

    def update(self, depth_m: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> float:
        """Feed the depth of the frame just published; return the anchor for the next frame.

        Args:
            depth_m: float32 [H, W] depth [m] of the last frame.
            roi: ``(x, y, w, h)`` [px] for ``roi`` mode, None for ``auto``.

        Returns:
            The anchor [m] to use from now on.

        Raises:
            RoiOutsideImage: ``roi`` has no pixel in the image; the anchor stays as it was.
        """
        scene_m = self.scene_depth(depth_m, roi)
        wanted = self.smallest_covering(scene_m)
        if wanted > self.current_m:
            candidate = wanted
        elif wanted < self.current_m and scene_m <= self.settings.down_margin * wanted:
            candidate = wanted
        else:
            candidate = self.current_m
        if candidate == self.current_m:
            self._pending_m, self._pending_frames = None, 0
            return self.current_m
        if candidate == self._pending_m:
            self._pending_frames += 1
        else:
            self._pending_m, self._pending_frames = candidate, 1
        if self._pending_frames >= self.settings.patience:
            self.reset(candidate)
        return self.current_m


#: Frames over which a handover's scale correction fades out (``ScaleHandover``).
HANDOVER_FRAMES = 15


class ScaleHandover:
    """Keeps the published scale continuous when ``auto`` / ``roi`` switch anchors.

    Two anchors of one model do not see the world at exactly the same scale (the anchors'
    ``scale_spread``, ``anchor_metrics``). At a switch the frame is decoded at the old and the
    new anchor (one encoder pass); ``start`` takes the ratio ``r = median(old) / median(new)``
    over the pixels both call finite, and the new anchor's depth is multiplied by ``r ** w``
    with ``w`` going from 1 to 0 over ``frames`` frames: no jump at the switch, the new anchor's
    own scale a moment later. A user's explicit anchor change is not a handover (``cancel``).

    Args:
        frames: Frames over which the correction fades out.
    """

    def __init__(self, frames: int = HANDOVER_FRAMES) -> None:
        self.frames = max(1, int(frames))
        self.ratio = 1.0
        self._left = 0

    @property
    def active(self) -> bool:
        """Whether a correction is being applied."""
        return self._left > 0

    @staticmethod
    def median_ratio(old_m: np.ndarray, new_m: np.ndarray) -> float:
        """``median(old) / median(new)`` over the pixels finite and > 0 in both (1.0 if none)."""
        both = np.isfinite(old_m) & np.isfinite(new_m) & (old_m > 0) & (new_m > 0)
        if not both.any():
            return 1.0
        return float(np.median(old_m[both]) / np.median(new_m[both]))

    def start(self, old_m: np.ndarray, new_m: np.ndarray) -> float:
        """Begin a handover from the same frame decoded at the old and the new anchor.

        Returns:
            The ratio applied to this frame (``r``).
        """
        self.ratio = self.median_ratio(old_m, new_m)
        self._left = self.frames
        return self.ratio

    def cancel(self) -> None:
        """Stop correcting (an explicit anchor change, a mode change)."""
        self._left = 0

    def apply(self, depth_m: np.ndarray) -> np.ndarray:
        """The new anchor's depth of this frame with the fading correction; advances one frame."""
        if self._left <= 0:
            return depth_m
        weight = self._left / self.frames
        self._left -= 1
        return depth_m * np.float32(self.ratio ** weight)
