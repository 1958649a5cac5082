"""Augmentations keep metric scale: depth values and back-projected 3D points are preserved."""

from __future__ import annotations

import numpy as np
import pytest

from metric_solver_ros.data.augment import (
    AugmentConfig,
    augment,
    color_jitter,
    crop,
    fit_to_size,
    hflip,
    nearest_indices,
    resize,
    round_to_multiple,
)
from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic import render_scene, render_specs, scene_spec
from metric_solver_ros.engine import network_input_size

H, W = 48, 64


@pytest.fixture(scope='module')
def scene() -> Sample:
    s = render_scene('outdoor', 5, H, W)  # has sky (+inf)
    d = s.depth_m.copy()
    d[3, 5] = 0.0  # an invalid pixel
    d[7, 9] = np.nan
    return Sample(s.image, d, s.intrinsics, s.name, s.scene)


def _points(s: Sample) -> np.ndarray:
    """[H, W, 3] camera-frame points (NaN where depth is not finite and positive)."""
    fx, fy, cx, cy = s.intrinsics
    v, u = np.mgrid[0 : s.height, 0 : s.width].astype(np.float64)
    d = np.where(np.isfinite(s.depth_m) & (s.depth_m > 0), s.depth_m, np.nan).astype(np.float64)
    return np.stack(((u - cx) / fx * d, (v - cy) / fy * d, d), -1)


def _same_special(a: np.ndarray, b: np.ndarray) -> None:
    """0 / NaN / +inf pixels are the same pixels in both maps."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    np.testing.assert_array_equal(a == 0, b == 0)


def test_crop_keeps_3d_points_exactly(scene):
    c = crop(scene, 5, 9, 30, 40)
    np.testing.assert_array_equal(c.depth_m, scene.depth_m[5:35, 9:49])
    np.testing.assert_allclose(_points(c), _points(scene)[5:35, 9:49], rtol=1e-12, equal_nan=True)
    with pytest.raises(ValueError):
        crop(scene, 40, 0, 10, 10)


def test_hflip_mirrors_principal_point_and_points(scene):
    f = hflip(scene)
    assert f.intrinsics[2] == pytest.approx(W - 1 - scene.intrinsics[2])
    p, q = _points(scene), _points(f)[:, ::-1]
    np.testing.assert_allclose(q[..., 0], -p[..., 0], rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(q[..., 1:], p[..., 1:], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(hflip(f).image, scene.image)


def test_resize_scales_intrinsics_like_rendering_at_that_size():
    spec = scene_spec('indoor', 6)
    big = render_specs([spec], 2 * H, 2 * W)['intrinsics'][0].numpy()
    small = render_specs([spec], H, W)['intrinsics'][0].numpy()
    s = Sample(
        np.zeros((2 * H, 2 * W, 3), np.uint8),
        np.ones((2 * H, 2 * W), np.float32),
        tuple(big.tolist()),
    )
    r = resize(s, H, W)
    np.testing.assert_allclose(r.intrinsics, small, rtol=1e-6)


@pytest.mark.parametrize('size', [(30, 41), (96, 128), (50, 64)])
def test_resize_nearest_keeps_depth_values_and_points(scene, size):
    h, w = size
    r = resize(scene, h, w)
    iy, ix = nearest_indices(H, h), nearest_indices(W, w)
    src = scene.depth_m[iy[:, None], ix[None, :]]
    np.testing.assert_array_equal(r.depth_m.view(np.uint32), src.view(np.uint32))  # bit exact
    _same_special(r.depth_m, src)
    # each output pixel's 3D point is the source pixel's, up to half a source pixel laterally
    fx, fy = scene.intrinsics[:2]
    p_out = _points(r)
    p_src = _points(scene)[iy[:, None], ix[None, :]]
    d = p_src[..., 2]
    np.testing.assert_array_equal(p_out[..., 2], d)
    ok = np.isfinite(d)
    assert (np.abs(p_out[..., 0] - p_src[..., 0])[ok] <= 0.5 * d[ok] / fx + 1e-9).all()
    assert (np.abs(p_out[..., 1] - p_src[..., 1])[ok] <= 0.5 * d[ok] / fy + 1e-9).all()


def test_integer_upsample_is_exact(scene):
    r = resize(scene, 2 * H, 2 * W)
    np.testing.assert_array_equal(r.depth_m[::2, ::2], scene.depth_m)
    np.testing.assert_array_equal(r.depth_m[1::2, 1::2], scene.depth_m)
    assert r.intrinsics[0] == pytest.approx(2 * scene.intrinsics[0])


def test_color_jitter_changes_image_only_and_is_deterministic(scene):
    a = color_jitter(scene.image, np.random.default_rng(3))
    b = color_jitter(scene.image, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == scene.image.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, scene.image)
    same = color_jitter(scene.image, np.random.default_rng(0), 0, 0, 0, 0)
    assert np.abs(same.astype(int) - scene.image.astype(int)).max() <= 1


def test_augment_output_size_determinism_and_metric_consistency(scene):
    # 48x64 into 28x42 (a wider aspect): resized like inference (short side 48 -> 28), so with
    # little zoom the sides are padded; with more, cropped.
    cfg = AugmentConfig(scale_range=(1.0, 1.6), flip_prob=0.0, jitter_prob=0.0)
    padded = 0
    for seed in range(8):
        a = augment(scene, 28, 42, np.random.default_rng(seed), cfg)
        b = augment(scene, 28, 42, np.random.default_rng(seed), cfg)
        assert a.image.shape == (28, 42, 3) and a.depth_m.shape == (28, 42)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.depth_m, b.depth_m)
        # every output pixel looks along the ray of a continuous source position; its depth is
        # the source depth at the nearest source pixel (unless that is a rounding tie)
        fx, fy, cx, cy = scene.intrinsics
        fx2, fy2, cx2, cy2 = a.intrinsics
        v, u = np.mgrid[0:28, 0:42].astype(np.float64)
        us = (u - cx2) / fx2 * fx + cx
        vs = (v - cy2) / fy2 * fy + cy
        iu, iv = np.floor(us + 0.5).astype(int), np.floor(vs + 0.5).astype(int)
        inside = (us > -0.5) & (us < W - 0.5) & (vs > -0.5) & (vs < H - 0.5)
        # the padding: black, depth 0 (never supervised)
        assert np.all(a.depth_m[~inside] == 0) and np.all(a.image[~inside] == 0)
        padded += int((~inside).any())
        clear = (np.abs(us - np.round(us)) < 0.49) & (np.abs(vs - np.round(vs)) < 0.49) & inside
        assert clear.mean() > 0.6
        src = scene.depth_m[iv.clip(0, H - 1), iu.clip(0, W - 1)]
        np.testing.assert_array_equal(a.depth_m[clear], src[clear])
    assert 0 < padded < 8


@pytest.mark.parametrize('shape', [(480, 640), (512, 512), (576, 640), (640, 480), (375, 1242)])
def test_fit_to_size_gives_the_focal_length_of_inference(shape):
    # The engine scales the shorter side to min(input_size) whatever the aspect; training must
    # show the network the same focal length [px], or its metric depth is off by the ratio.
    h, w = shape
    sample = Sample(np.zeros((h, w, 3), np.uint8), np.ones((h, w), np.float32),
                    (500.0, 500.0, w / 2 - 0.5, h / 2 - 0.5))
    net_h, net_w = network_input_size(shape, 196, 14)
    inference_fx = 500.0 * min(net_h, net_w) / min(h, w)
    out = fit_to_size(sample, 196, 252, np.random.default_rng(0))
    assert out.image.shape == (196, 252, 3)
    assert out.intrinsics[0] == pytest.approx(inference_fx, rel=0.01)


def test_augment_flip_and_depth_unchanged_by_jitter(scene):
    cfg = AugmentConfig(scale_range=(1.0, 1.0), flip_prob=1.0, jitter_prob=1.0)
    a = augment(scene, 42, 56, np.random.default_rng(0), cfg)
    rng = np.random.default_rng(0)
    rng.uniform(1.0, 1.0)  # augment draws the zoom first
    ref = hflip(fit_to_size(scene, 42, 56, rng))
    assert a.intrinsics == pytest.approx(ref.intrinsics)
    np.testing.assert_array_equal(a.depth_m, ref.depth_m)
    assert not np.array_equal(a.image, ref.image)


def test_round_to_multiple():
    assert round_to_multiple(224) == 224
    assert round_to_multiple(230) == 224
    assert round_to_multiple(3) == 14
    assert round_to_multiple(100, 16) == 96
