"""Depth that holds still: metrics over consecutive frames of one result.

Pure numpy, like :mod:`metric_solver_ros.metrics`, whose protocol this follows: valid GT pixels
are finite and in ``(min_depth_m, cap_m]``; predictions are clipped to ``[min_depth_m, cap_m]``
(+inf becomes the cap); NaN predictions are left out. Frames are taken in the order given
(consecutive frames of a bag, by header stamp); every metric compares a frame with the one
before it, at GT resolution.

* ``scale_jitter``: the standard deviation over frames of ``ln(median predicted / median GT)``
  (medians over the valid pixels the result predicted). A constant scale error does not count;
  a global scale that wobbles from frame to frame does (0.05: about 5 %). ``scale_step``: the
  median over consecutive pairs of ``|change of that log ratio|`` (insensitive to slow drift).
* ``flicker``: per pair, the median over *static* pixels of ``|ln p_t - ln p_t-1|``; mean over
  pairs. A pixel is static when the GT says so: valid in both frames and its GT changed by at
  most ``STATIC_LOG_TOL`` in ln (a still camera, or a moving one where the surface at that pixel
  kept its depth). Where the GT has no depth in either frame (holes, not sky), the pixel counts
  as static only if the camera is still: known from the poses when the bag has them
  (``still_camera``), else as the user states it (``--static-camera``).
* ``warped_error`` (poses and intrinsics known): per pair, every valid GT pixel of the earlier
  frame is carried into the later one with the known motion: its GT point gives the pixel it
  lands on, and the point at the *predicted* depth along the same ray gives the depth the
  earlier prediction implies there. Where the GT confirms the point is visible (the warped GT
  depth agrees with the later GT within ``VISIBLE_LOG_TOL``), ``|ln implied - ln p_t|``; median
  over those pixels, mean over pairs. 0 when the predictions move exactly with the camera;
  a scale wobble or a wrong scale under translation shows up here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from metric_solver_ros.metrics import clip_prediction, valid_gt_mask

#: GT depth change (|ln ratio|) up to which a pixel counts as static between two frames.
STATIC_LOG_TOL = 0.01
#: Warped GT depth vs GT (|ln ratio|) up to which a warped point counts as visible.
VISIBLE_LOG_TOL = 0.02
#: A camera moved less than this [m] and turned less than ``STILL_RAD`` between frames is still.
STILL_M = 0.01
STILL_RAD = math.radians(0.5)


def log_scale_ratio(pred_m: np.ndarray, gt_m: np.ndarray, *, min_depth_m: float,
                    cap_m: float) -> float | None:
    """``ln(median prediction / median GT)`` over the valid pixels the result predicted.

    Returns:
        The log ratio, or None when no valid pixel has a prediction.
    """
    pred_m = np.asarray(pred_m)
    valid = valid_gt_mask(gt_m, min_depth_m, cap_m) & ~np.isnan(pred_m)
    if not valid.any():
        return None
    pred = clip_prediction(pred_m[valid], min_depth_m, cap_m)
    return float(np.log(np.median(pred)) - np.log(np.median(np.asarray(gt_m)[valid])))


def still_camera(pose_a: np.ndarray, pose_b: np.ndarray) -> bool:
    """Whether the camera stayed put between two 4x4 camera-to-world poses.

    Still: moved less than ``STILL_M`` and turned less than ``STILL_RAD``.
    """
    relative = np.linalg.inv(pose_a) @ pose_b
    cos_angle = np.clip((np.trace(relative[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return bool(np.linalg.norm(relative[:3, 3]) < STILL_M and math.acos(cos_angle) < STILL_RAD)


def static_pixels(gt_prev: np.ndarray, gt_cur: np.ndarray, *, min_depth_m: float, cap_m: float,
                  camera_still: bool) -> np.ndarray:
    """Pixels whose depth is known not to have changed between two frames (module docstring)."""
    gt_prev, gt_cur = np.asarray(gt_prev), np.asarray(gt_cur)
    both = valid_gt_mask(gt_prev, min_depth_m, cap_m) & valid_gt_mask(gt_cur, min_depth_m, cap_m)
    static = np.zeros(gt_cur.shape, dtype=bool)
    static[both] = np.abs(np.log(gt_cur[both]) - np.log(gt_prev[both])) <= STATIC_LOG_TOL
    if camera_still:
        with np.errstate(invalid='ignore'):
            known = [np.isfinite(g) & (g > min_depth_m) for g in (gt_prev, gt_cur)]
        sky = np.isposinf(gt_prev) | np.isposinf(gt_cur)
        static |= ~known[0] & ~known[1] & ~sky
    return static


def flicker(pred_prev: np.ndarray, pred_cur: np.ndarray, static: np.ndarray, *,
            min_depth_m: float, cap_m: float) -> float | None:
    """Median over static pixels predicted in both frames of ``|ln p_cur - ln p_prev|``."""
    pred_prev, pred_cur = np.asarray(pred_prev), np.asarray(pred_cur)
    use = static & ~np.isnan(pred_prev) & ~np.isnan(pred_cur)
    if not use.any():
        return None
    a = clip_prediction(pred_prev[use], min_depth_m, cap_m)
    b = clip_prediction(pred_cur[use], min_depth_m, cap_m)
    return float(np.median(np.abs(np.log(b) - np.log(a))))


def warp(depth_m: np.ndarray, pixels: tuple[np.ndarray, np.ndarray],
         intrinsics: Sequence[float], cur_from_prev: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Carry pixels with planar depths of one camera into another.

    Args:
        depth_m: Planar depth [m] of each pixel, [N].
        pixels: ``(rows, cols)`` [px] of the pixels, [N] each.
        intrinsics: ``(fx, fy, cx, cy)`` [px] of both cameras.
        cur_from_prev: 4x4 transform from the first camera's frame to the second's.

    Returns:
        ``(rows, cols, depth)``: where the points land in the second camera [px, float] and
        their planar depth there [m].
    """
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    rows, cols = pixels
    z = np.asarray(depth_m, dtype=np.float64)
    points = np.stack([z * (cols - cx) / fx, z * (rows - cy) / fy, z])  # [3, N]
    moved = cur_from_prev[:3, :3] @ points + cur_from_prev[:3, 3:4]
    with np.errstate(divide='ignore', invalid='ignore'):
        return fy * moved[1] / moved[2] + cy, fx * moved[0] / moved[2] + cx, moved[2]


def warped_error(pred_prev: np.ndarray, pred_cur: np.ndarray, gt_prev: np.ndarray,
                 gt_cur: np.ndarray, pose_prev: np.ndarray, pose_cur: np.ndarray,
                 intrinsics: Sequence[float], *, min_depth_m: float,
                 cap_m: float) -> float | None:
    """Median ``|ln implied - ln p_cur|`` over GT-visible warped pixels (module docstring).

    Args:
        pred_prev: Predicted depth [m] of the earlier frame, HxW.
        pred_cur: Predicted depth [m] of the later frame, HxW.
        gt_prev: GT depth [m] of the earlier frame.
        gt_cur: GT depth [m] of the later frame.
        pose_prev: 4x4 camera-to-world pose of the earlier frame.
        pose_cur: 4x4 camera-to-world pose of the later frame.
        intrinsics: ``(fx, fy, cx, cy)`` [px] at this resolution.
        min_depth_m: Exclusive lower GT limit and prediction clip [m].
        cap_m: Inclusive GT cap and prediction clip [m].

    Returns:
        The error, or None when no pixel is visible in both frames.
    """
    pred_prev, pred_cur = np.asarray(pred_prev), np.asarray(pred_cur)
    gt_prev, gt_cur = np.asarray(gt_prev), np.asarray(gt_cur)
    height, width = gt_cur.shape
    cur_from_prev = np.linalg.inv(pose_cur) @ pose_prev
    source = valid_gt_mask(gt_prev, min_depth_m, cap_m) & ~np.isnan(pred_prev)
    pixels = np.nonzero(source)
    rows, cols, gt_z = warp(gt_prev[source], pixels, intrinsics, cur_from_prev)
    r, c = np.rint(rows), np.rint(cols)
    inside = (gt_z > min_depth_m) & (r >= 0) & (r < height) & (c >= 0) & (c < width)
    r, c = r[inside].astype(np.int64), c[inside].astype(np.int64)
    target_gt = gt_cur[r, c]
    visible = valid_gt_mask(target_gt, min_depth_m, cap_m) & ~np.isnan(pred_cur[r, c])
    visible[visible] = (np.abs(np.log(gt_z[inside][visible]) - np.log(target_gt[visible]))
                        <= VISIBLE_LOG_TOL)
    if not visible.any():
        return None
    pred_src = clip_prediction(pred_prev[source][inside][visible], min_depth_m, cap_m)
    pixels_src = (pixels[0][inside][visible], pixels[1][inside][visible])
    _, _, implied = warp(pred_src, pixels_src, intrinsics, cur_from_prev)
    target = clip_prediction(pred_cur[r[visible], c[visible]], min_depth_m, cap_m)
    implied = clip_prediction(implied, min_depth_m, cap_m)  # behind the camera -> min_depth
    return float(np.median(np.abs(np.log(implied) - np.log(target))))


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


class TemporalSeries:
    """Accumulates the temporal metrics of one result over consecutive frames.

    Holds the previous frame only (prediction and GT at GT resolution).

    Args:
        min_depth_m: Exclusive lower GT limit and prediction clip [m].
        cap_m: Inclusive GT cap and prediction clip [m].
        static_camera: The user states the camera is still (used for GT holes when the frames
            have no poses).
    """

    def __init__(self, *, min_depth_m: float, cap_m: float, static_camera: bool = False) -> None:
        self.min_depth_m = float(min_depth_m)
        self.cap_m = float(cap_m)
        self.static_camera = bool(static_camera)
        self.ln_scale_ratio: list[float | None] = []
        self.flicker: list[float | None] = []
        self.static_fraction: list[float] = []
        self.warped_error: list[float | None] = []
        self.still_source = 'user' if static_camera else 'none'
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray, pose_world_cam: np.ndarray | None = None,
            intrinsics: Sequence[float] | None = None) -> None:
        """Add the next frame.

        Args:
            pred_m: Predicted depth [m] at GT resolution (+inf too far, NaN undefined).
            gt_m: GT depth [m] (0 / NaN invalid, +inf sky).
            pose_world_cam: 4x4 camera-to-world pose, if known.
            intrinsics: ``(fx, fy, cx, cy)`` [px] at GT resolution, if known.
        """
        pred_m, gt_m = np.asarray(pred_m), np.asarray(gt_m)
        limits = {'min_depth_m': self.min_depth_m, 'cap_m': self.cap_m}
        self.ln_scale_ratio.append(log_scale_ratio(pred_m, gt_m, **limits))
        prev = self._prev
        if prev is not None and prev[1].shape == gt_m.shape:
            pred_prev, gt_prev, pose_prev = prev
            still = self.static_camera
            if pose_prev is not None and pose_world_cam is not None:
                still = still_camera(pose_prev, pose_world_cam)
                self.still_source = 'poses'
            static = static_pixels(gt_prev, gt_m, camera_still=still, **limits)
            valid = valid_gt_mask(gt_m, self.min_depth_m, self.cap_m)
            self.static_fraction.append(float(static[valid].mean()) if valid.any() else 0.0)
            self.flicker.append(flicker(pred_prev, pred_m, static, **limits))
            if pose_prev is not None and pose_world_cam is not None and intrinsics is not None:
                self.warped_error.append(warped_error(
                    pred_prev, pred_m, gt_prev, gt_m, pose_prev, pose_world_cam, intrinsics,
                    **limits))
        self._prev = (pred_m, gt_m, None if pose_world_cam is None else np.asarray(pose_world_cam))

    def summary(self) -> dict[str, object]:
        """The metrics (module docstring) and their per-frame / per-pair series."""
        ratios = [r for r in self.ln_scale_ratio if r is not None]
        pairs = zip(self.ln_scale_ratio[:-1], self.ln_scale_ratio[1:], strict=True)
        steps = [abs(b - a) for a, b in pairs if a is not None and b is not None]
        return {
            'frames': len(self.ln_scale_ratio),
            'scale_jitter': float(np.std(ratios)) if len(ratios) >= 2 else None,
            'scale_step': float(np.median(steps)) if steps else None,
            'flicker': _mean(self.flicker),
            'static_fraction': _mean(self.static_fraction),
            'still_camera_from': self.still_source,
            'warped_error': _mean(self.warped_error),
            'warped_pairs': sum(v is not None for v in self.warped_error),
            'ln_scale_ratio': list(self.ln_scale_ratio),
            'flicker_per_pair': list(self.flicker),
            'warped_error_per_pair': list(self.warped_error),
        }
