"""The temporal filter on constructed depth streams: smoothing, motion safety and resets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metric_solver_ros.temporal_filter import (
    ODOMETRY_STALE_S,
    CameraMotion,
    MotionFromOdometry,
    TemporalFilter,
    TemporalFilterSettings,
)

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
    with pytest.raises(ValueError, match='still_frames'):
        TemporalFilterSettings(still_frames=0)
    with pytest.raises(ValueError, match='hold_gain'):
        TemporalFilterSettings(hold_gain=1.5)
    with pytest.raises(ValueError, match='HxW'):
        TemporalFilter('scale').apply(np.ones((2, 3, 4), np.float32))


# ---------------------------------------------------------------- the per-pixel pass of full


def _reference_full(depth, previous, factor, moved, settings):
    """``full``'s per-pixel rule written plainly (module docstring), for any NaN / inf."""
    frame = depth * np.float32(factor)
    carried = previous * np.float32(moved)
    with np.errstate(invalid='ignore'):
        static = np.abs(carried - frame) < np.float32(settings.pixel_static_tol) * frame
    blended = (1 - settings.pixel_keep) * frame + settings.pixel_keep * carried
    return np.where(static, blended, frame), static


def test_full_per_pixel_pass_matches_the_plain_rule_with_nan_and_inf():
    rng = np.random.default_rng(4)
    values = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, 3.0], np.float32)
    shape = (700, 9)  # several row blocks, the last one short
    previous = rng.uniform(1.0, 4.0, shape).astype(np.float32)
    depth = previous * rng.uniform(0.8, 1.2, shape).astype(np.float32)  # some static, some not
    for array in (previous, depth):  # every special value somewhere in both frames
        hits = rng.random(shape) < 0.2
        array[hits] = rng.choice(values, hits.sum())
    flt = TemporalFilter('full')
    flt._start(previous)
    flt._pixels = previous.copy()
    out = np.empty_like(depth)
    with np.errstate(invalid='ignore', divide='ignore'):
        flt._blend_static(depth, np.float32(1.02), np.float32(0.99), out)
        expected, static = _reference_full(depth, previous, 1.02, 0.99, flt.settings)
    assert 0.2 < static.mean() < 0.8
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-5)
    np.testing.assert_array_equal(flt._pixels, out)  # the history is the output


# ---------------------------------------------------------------- the stillness hint


def _rotation_y(angle_rad):
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    return pose


def test_camera_motion_between_poses_and_from_a_twist():
    pose_a = _rotation_y(0.3)
    pose_a[:3, 3] = (1.0, 2.0, 3.0)
    for angle in (0.0, 1e-8, 0.02, 1.0, math.pi - 1e-6):
        turn = _rotation_y(angle) @ np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0],
                                              [0, 0, 0, 1.0]])  # about z, then y
        turn[:3, 3] = (0.1, -0.2, 0.05)
        motion = CameraMotion.between(pose_a, pose_a @ turn)
        np.testing.assert_allclose(motion.matrix(), turn, atol=1e-6)
        assert motion.translation_m == pytest.approx((0.1, -0.2, 0.05))
    twist = CameraMotion.from_twist((1.0, 0.0, 0.0), (0.0, 0.0, 0.5), 0.1)
    assert twist.translation_m == pytest.approx((0.1, 0, 0))
    assert twist.rotation_rad == pytest.approx((0, 0, 0.05))
    np.testing.assert_array_equal(CameraMotion().matrix(), np.eye(4))


def _wobbling_scene(frames, seed=5):
    """A still camera's frames: a slow global wobble, stronger far away, and pixel noise.

    As a model's response to exposure drift: not uniform over depth.
    """
    rng = np.random.default_rng(seed)
    base = _scene()
    far = np.log(np.where(np.isfinite(base), base, 1.0)) / np.log(9.0)  # 0 near .. 1 far
    out = []
    for t in range(frames):
        drift = 0.06 * math.sin(2 * math.pi * 0.05 * t) + rng.normal(0.0, 0.01)
        noise = np.exp(rng.normal(0.0, 0.01, SHAPE))
        out.append((base * np.exp(drift * (0.5 + far)) * noise).astype(np.float32))
    return base, out


def _scale_std(outs, base):
    finite = np.isfinite(base)
    return float(np.std([np.log(np.median(o[finite])) for o in outs]))


@pytest.mark.parametrize('mode', ['scale', 'full'])
def test_a_still_camera_holds_the_scale_the_blind_filter_follows(mode):
    base, frames = _wobbling_scene(40)
    blind, told = TemporalFilter(mode), TemporalFilter(mode)
    blind_out = [blind.apply(f) for f in frames]
    told_out = [told.apply(f, camera_motion=CameraMotion()) for f in frames]
    assert told.held and not blind.held and told.last_reset == 'start'
    raw = _scale_std(frames, base)
    assert _scale_std(blind_out, base) > 0.5 * raw  # a slow wobble looks like motion
    assert _scale_std(told_out, base) < 0.2 * raw, (_scale_std(told_out, base), raw)


def test_unknown_or_large_motion_is_the_blind_filter_exactly():
    _, frames = _wobbling_scene(12)
    walking = CameraMotion((0.0, 0.0, 0.1))  # 10 cm a frame: never still
    outs = []
    for motion in (None, walking):
        flt = TemporalFilter('full')
        outs.append([flt.apply(f, camera_motion=motion) for f in frames])
        assert not flt.held
    for a, b in zip(*outs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_pan_is_not_held_a_shaking_mount_is():
    _, frames = _wobbling_scene(20)
    rng = np.random.default_rng(6)
    pan = TemporalFilter('scale')
    for frame in frames:  # 1 deg a frame (10 deg/s at 10 Hz), with 0.2 deg of vibration
        pan.apply(frame, camera_motion=CameraMotion.between(
            _rotation_y(rng.normal(0, 0.0035)), _rotation_y(math.radians(1.0)
                                                             + rng.normal(0, 0.0035))))
        assert not pan.held
    shaking = TemporalFilter('scale')
    pose = np.eye(4)
    held = []
    for frame in frames:  # 0.2 deg and 3 mm per axis around one pose, independent per frame
        new = _rotation_y(rng.normal(0, 0.0035))
        new[:3, 3] = rng.normal(0, 0.003, 3)
        shaking.apply(frame, camera_motion=CameraMotion.between(pose, new))
        pose = new
        held.append(shaking.held)
    assert np.mean(held) > 0.8, held


def test_a_hold_leaves_movers_out_and_still_resets_on_a_cut():
    base, frames = _wobbling_scene(10)
    flt = TemporalFilter('scale')
    for frame in frames:
        out = flt.apply(frame, camera_motion=CameraMotion())
    assert flt.held
    rest = np.isfinite(base)
    rest[10:60, 20:45] = False
    level = np.log(np.median(out[rest]))
    person = frames[-1].copy()
    person[10:60, 20:45] = 0.5  # a person walks into a quarter of the image, nearer than all
    out = flt.apply(person, camera_motion=CameraMotion())
    assert flt.held and abs(np.log(np.median(out[rest])) - level) < 0.005
    other_room = _scene(seed=9)
    assert flt.apply(other_room, camera_motion=CameraMotion()) is not None
    assert flt.last_reset == 'cut' and not flt.held


def test_odometry_motion_needs_a_fresh_twist_and_a_previous_image():
    odometry = MotionFromOdometry()
    odometry.add(1_000_000_000, (0.5, 0.0, 0.0), (0.0, 0.0, 0.2))
    assert odometry.motion(1_000_000_000) is None  # the first image: no interval
    motion = odometry.motion(1_100_000_000)
    assert motion.translation_m == pytest.approx((0.05, 0, 0))
    assert motion.rotation_rad == pytest.approx((0, 0, 0.02))
    stale = 1_000_000_000 + int(ODOMETRY_STALE_S * 1e9) + 1
    assert odometry.motion(stale) is None
    assert odometry.motion(900_000_000) is None  # stamps going back
    odometry.add(stale, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    assert odometry.motion(stale + 50_000_000) == CameraMotion()  # still
    assert MotionFromOdometry().motion(5) is None  # no odometry at all
