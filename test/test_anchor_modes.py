"""The auto / roi anchor rules, on constructed depth maps."""

import numpy as np
import pytest

from metric_solver_ros.anchor_modes import (
    AnchorSelector,
    AnchorSelectorSettings,
    RoiOutsideImage,
    ScaleHandover,
)

POOL = (0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 20.0, 40.0, 80.0, 120.0)


def scene(depth_m: float, sky_fraction: float = 0.0) -> np.ndarray:
    depth = np.full((40, 50), depth_m, np.float32)
    depth[: int(40 * sky_fraction)] = np.inf
    return depth


def test_smallest_covering_pool_anchor():
    selector = AnchorSelector(POOL, 10.0)
    assert selector.smallest_covering(0.1) == 0.5
    assert selector.smallest_covering(4.0) == 4.0
    assert selector.smallest_covering(4.01) == 6.0
    assert selector.smallest_covering(500.0) == 120.0
    assert selector.smallest_covering(float('inf')) == 120.0


def test_auto_moves_up_after_patience_frames():
    selector = AnchorSelector(POOL, 2.0, AnchorSelectorSettings(patience=2))
    assert selector.update(scene(7.0)) == 2.0  # first frame wanting 10 m: pending
    assert selector.update(scene(7.0)) == 10.0


def test_auto_moves_down_only_with_margin():
    selector = AnchorSelector(POOL, 10.0, AnchorSelectorSettings(patience=1, down_margin=0.8))
    # 3.5 m wants 4 m but is not <= 0.8 * 4 = 3.2 m: stay.
    assert selector.update(scene(3.5)) == 10.0
    assert selector.update(scene(3.0)) == 4.0


def test_auto_does_not_flicker_at_a_pool_boundary():
    selector = AnchorSelector(POOL, 10.0, AnchorSelectorSettings(patience=2))
    anchors = [selector.update(scene(d)) for d in [9.5, 10.5, 9.5, 10.5, 9.5, 10.5, 9.5]]
    assert set(anchors) == {10.0}


def test_auto_ignores_sky_and_nan():
    selector = AnchorSelector(POOL, 40.0, AnchorSelectorSettings(patience=1))
    depth = scene(3.0, sky_fraction=0.5)
    depth[-5:] = np.nan
    assert selector.update(depth) == 4.0
    assert selector.update(np.full((4, 4), np.inf, np.float32)) == 120.0


def test_roi_uses_only_the_region():
    selector = AnchorSelector(POOL, 10.0, AnchorSelectorSettings(patience=1))
    depth = scene(30.0)
    depth[10:20, 5:15] = 0.75  # a close object inside the ROI
    assert selector.update(depth, roi=(5, 10, 10, 10)) == 1.0
    assert selector.update(depth, roi=None) == 40.0


@pytest.mark.parametrize('roi', [(45, 35, 100, 100), (0, 0, 1, 1)])
def test_roi_clipped_to_the_image(roi):
    selector = AnchorSelector(POOL, 10.0, AnchorSelectorSettings(patience=1))
    assert selector.update(scene(1.5), roi=roi) == 2.0


def test_roi_outside_the_image_keeps_the_anchor_and_says_so():
    # e.g. a roi set for 640x480 on a 320x240 stream: no pixel to choose from
    selector = AnchorSelector(POOL, 1.0, AnchorSelectorSettings(patience=1))
    with pytest.raises(RoiOutsideImage, match='no pixel in the 50x40 image'):
        selector.update(scene(0.7), roi=(400, 300, 100, 100))
    assert selector.current_m == 1.0


def test_reset_forgets_pending_change():
    selector = AnchorSelector(POOL, 2.0, AnchorSelectorSettings(patience=2))
    selector.update(scene(7.0))
    selector.reset(4.0)
    assert selector.update(scene(7.0)) == 4.0


def test_scale_handover_starts_at_the_old_scale_and_fades_to_the_new():
    old = np.full((4, 4), 6.0, np.float32)
    new = np.full((4, 4), 4.0, np.float32)
    new[0, 0] = np.inf  # not finite in both: left out of the ratio
    handover = ScaleHandover(frames=4)
    assert handover.start(old, new) == pytest.approx(1.5)
    published = [float(np.median(handover.apply(new)[1:])) for _ in range(6)]
    assert published[0] == pytest.approx(6.0)  # the switch frame: no jump
    assert published == sorted(published, reverse=True)  # fading towards the new scale
    assert published[4:] == [4.0, 4.0] and not handover.active
    handover.start(old, new)
    handover.cancel()
    assert handover.apply(new) is new
    assert ScaleHandover.median_ratio(np.full(3, np.nan), np.ones(3)) == 1.0
