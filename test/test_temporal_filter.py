"""The temporal filter on constructed depth streams: smoothing, motion safety and resets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metric_solver_ros.temporal_filter import TemporalFilter, TemporalFilterSettings

SHAPE = (60, 80)


def _scene(seed=0):
    """A depth image with structure, a NaN hole and +inf sky."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 9.0, (6, 8)).repeat(10, 0).repeat(10, 1).astype(np.float32)
    depth[:5] = np.inf
    depth[30:33, 40:45] = np.nan
    return depth


def _log_median(depth):
    return float(np.log(np.median(depth[np.isfinite(depth)])))


@pytest.mark.parametrize('mode', ['scale', 'full'])
def test_constant_input_passes_unchanged(mode):
    flt = TemporalFilter(mode)
    depth = _scene()
    for _ in range(8):
        out = flt.apply(depth.copy())
        np.testing.assert_allclose(out, depth, rtol=1e-6)  # NaN and +inf kept in place
    assert out.dtype == np.float32 and flt.last_reset == 'start'


def test_off_is_the_identity():
    depth = _scene()
    assert TemporalFilter('off').apply(depth) is depth


@pytest.mark.parametrize('mode', ['scale', 'full'])
def test_scale_jitter_of_a_static_stream_is_more_than_halved(mode):
    rng = np.random.default_rng(1)
    base = _scene()
    wobble = rng.normal(0.0, 0.04, 60)
    flt = TemporalFilter(mode)
    raw, filtered, pixel_raw, pixel_filtered = [], [], [], []
    previous = None
    for s in wobble:
        noise = np.exp(rng.normal(0.0, 0.02, SHAPE)).astype(np.float32)  # per-pixel flicker
        depth = base * np.float32(math.exp(s)) * noise
        out = flt.apply(depth)
        raw.append(_log_median(depth))
        filtered.append(_log_median(out))
        if previous is not None:
            finite = np.isfinite(base)
            pixel_raw.append(np.median(np.abs(np.log(depth[finite] / previous[0][finite]))))
            pixel_filtered.append(np.median(np.abs(np.log(out[finite] / previous[1][finite]))))
        previous = (depth, out)
    assert flt.last_reset == 'start'  # no cut was seen in the wobble
    ratio = np.std(filtered[10:]) / np.std(raw[10:])
    assert ratio < 0.5, ratio
    flicker_ratio = np.mean(pixel_filtered[10:]) / np.mean(pixel_raw[10:])
    if mode == 'full':  # per-pixel smoothing removes per-pixel flicker too
        assert flicker_ratio < 0.6, flicker_ratio
    else:
        assert flicker_ratio < 0.9, flicker_ratio


@pytest.mark.parametrize('mode', ['scale', 'full'])
def test_steady_motion_is_followed_without_lag(mode):
    """Walking towards the scene: every depth shrinks 3 % a frame; the output keeps up."""
    base = _scene()
    flt = TemporalFilter(mode)
    for i in range(30):
        depth = base * np.float32(0.97**i)
        out = flt.apply(depth)
    finite = np.isfinite(depth)
    lag = np.median(np.abs(np.log(out[finite] / depth[finite])))
    assert lag < 0.01, lag


def test_a_moving_region_is_not_blended():
    base = _scene()
    flt = TemporalFilter('full')
    rng = np.random.default_rng(2)
    for _ in range(5):
        flt.apply(base * np.exp(rng.normal(0, 0.01, SHAPE)).astype(np.float32))
    moved = base * np.exp(rng.normal(0, 0.01, SHAPE)).astype(np.float32)
    moved[20:40, 10:30] = 0.8  # a person steps in front of the camera
    out = flt.apply(moved)
    region = (slice(20, 40), slice(10, 30))
    # The scale step may rescale the frame by a hair; the region itself is not mixed with the
    # old depth behind it (that would put it at ~1-9 m, not 0.8 m).
    np.testing.assert_allclose(out[region], 0.8, rtol=0.01)
    assert flt.last_reset == 'start'  # a fifth of the image is no cut
    still = np.isfinite(base)
    still[region] = False
    assert np.median(np.abs(np.log(out[still] / moved[still]))) > 1e-3  # elsewhere: blended


@pytest.mark.parametrize('mode', ['scale', 'full'])
def test_reset_on_anchor_change_and_scene_cut(mode):
    rng = np.random.default_rng(3)
    base = _scene()
    flt = TemporalFilter(mode)
    for s in rng.normal(0, 0.05, 6):
        flt.apply(base * np.float32(math.exp(s)), anchor_m=10.0)
    depth = base * np.float32(1.04)
    out = flt.apply(depth, anchor_m=20.0)  # another anchor: a new history
    assert flt.last_reset == 'anchor'
    np.testing.assert_array_equal(out, depth)
    for s in rng.normal(0, 0.05, 6):
        flt.apply(base * np.float32(math.exp(s)), anchor_m=20.0)
    other_room = _scene(seed=9)  # every pixel changes: a new room is never blended
    out = flt.apply(other_room, anchor_m=20.0)
    assert flt.last_reset == 'cut'
    np.testing.assert_array_equal(out, other_room)
    flt.apply(other_room * np.float32(1.5), anchor_m=20.0)  # a global jump of 50 %
    assert flt.last_reset == 'cut'
    flt.apply(other_room[:30], anchor_m=20.0)
    assert flt.last_reset == 'size'
    flt.reset()
    small = other_room[:30] * np.float32(1.1)
    np.testing.assert_array_equal(flt.apply(small, anchor_m=20.0), small)


def test_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match='mode'):
        TemporalFilter('median')
    with pytest.raises(ValueError, match='trend_gain'):
        TemporalFilterSettings(scale_gain=0.2, trend_gain=0.3)
    with pytest.raises(ValueError, match='pixel_keep'):
        TemporalFilterSettings(pixel_keep=1.0)
    with pytest.raises(ValueError, match='HxW'):
        TemporalFilter('scale').apply(np.ones((2, 3, 4), np.float32))
