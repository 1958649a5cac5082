"""The frame's finish on the device: shared head stages, reduced tail, packed cloud, one copy."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from node_harness import camera_image, small_config

from metric_solver_ros.conversions import pack_cloud
from metric_solver_ros.data.synthetic import render_scene
from metric_solver_ros.engine import DepthEngine, EngineError, PointsRequest
from metric_solver_ros.frame_outputs import HostCopy, back_project, depth_statistics, pack_points
from metric_solver_ros.model import create_model

CONFIG = small_config()


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    net = create_model(dataclasses.replace(CONFIG, head_out_scale=1.0))
    with torch.no_grad():  # weights far from zero: the anchor bias matters everywhere
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    return net


@pytest.mark.parametrize('patch_hw', [(1, 1), (2, 3), (5, 12), (12, 13), (13, 14), (14, 19),
                                      (19, 25), (26, 17)])
def test_one_image_at_many_anchors_equals_the_image_repeated_per_anchor(model, patch_hw):
    # One image: the heads compute its linear stages once and add each anchor's response on a
    # small grid (dpt.constant_response); repeated features take the per-anchor path.
    torch.manual_seed(1)
    images = torch.randn(1, 3, patch_hw[0] * 14, patch_hw[1] * 14)
    anchors = torch.tensor([1.0, 3.0, 10.0, 40.0])
    with torch.no_grad():
        features = model.encode(images)
        shared = model.decode(features, anchors, patch_hw, shared_stages=True)
        repeated = tuple((t.repeat(4, 1, 1), c.repeat(4, 1)) for t, c in features)
        per_anchor = model.decode(repeated, anchors, patch_hw)
    for key, value in per_anchor.items():
        scale = value.abs().max().item()
        assert scale > 1e-3
        np.testing.assert_allclose(shared[key].numpy(), value.numpy(), atol=2e-5 * scale)


def test_reduced_tail_gives_half_resolution_logits(model):
    with torch.no_grad():
        features = model.encode(torch.randn(1, 3, 14 * 8, 14 * 10))
        full = model.decode(features, torch.tensor([2.0, 20.0]), (8, 10))
        half = model.decode(features, torch.tensor([2.0, 20.0]), (8, 10), reduced_tail=True)
    assert {tuple(v.shape) for v in full.values()} == {(2, 1, 112, 140)}
    assert {tuple(v.shape) for v in half.values()} == {(2, 1, 56, 70)}


def test_half_resolution_fusion_stays_close_to_full_with_the_bundled_model():
    # The bundled model on a held-out synthetic scene: the half-resolution tail blurs edges
    # (benchmarks/multi_anchor.py measures delta1 0.96-0.998 against full), it must not be off.
    scene = render_scene('indoor', 555_000_123, 196, 252)
    full = DepthEngine.from_checkpoint(None, device='cpu')
    half = DepthEngine.from_checkpoint(None, device='cpu', multi_anchor_resolution='half')
    anchors = (1.0, 3.0, 10.0, 40.0)
    depth_full = full.infer(scene.image, anchors).depth_m
    depth_half = half.infer(scene.image, anchors).depth_m
    both = np.isfinite(depth_full) & np.isfinite(depth_half)
    assert both.mean() > 0.9
    ratio = np.abs(np.log(depth_half[both] / depth_full[both]))
    assert (ratio < np.log(1.25)).mean() > 0.9
    assert 0.0 < np.median(ratio) < 0.1


def test_engine_half_multi_anchor_resolution_keeps_single_anchors_exact(model):
    image = camera_image(96, 72)
    full = DepthEngine(model, device='cpu', precision='fp32')
    half = DepthEngine(model, device='cpu', precision='fp32', multi_anchor_resolution='half')
    one_full, one_half = full.infer(image, 10.0), half.infer(image, 10.0)
    np.testing.assert_array_equal(one_full.depth_m, one_half.depth_m)  # one anchor: full res
    many_full, many_half = full.infer(image, (2.0, 10.0)), half.infer(image, (2.0, 10.0))
    assert many_half.depth_m.shape == many_full.depth_m.shape == (72, 96)
    assert not np.array_equal(many_full.depth_m, many_half.depth_m)
    with pytest.raises(EngineError, match='multi_anchor_resolution'):
        DepthEngine(model, device='cpu', multi_anchor_resolution='quarter')


def test_engine_cloud_is_the_message_layout_of_its_points(model):
    engine = DepthEngine(model, device='cpu', precision='fp32')
    image = camera_image(96, 72)
    for with_rgb in (True, False):
        result = engine.infer(image, 10.0, points=PointsRequest((80.0, 80.0, 47.5, 35.5), 2,
                                                                 30.0, with_rgb))
        assert result.cloud.shape == (36, 48, 4 if with_rgb else 3)
        assert np.shares_memory(result.points_m, result.cloud)
        expected = pack_cloud(result.points_m, result.points_rgb if with_rgb else None)
        assert result.cloud.tobytes() == expected.tobytes()


def test_pack_points_on_the_device_equals_the_host_packing():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(5, 7, 3)).astype(np.float32)
    xyz[1, 2] = np.nan
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    packed = pack_points(torch.from_numpy(xyz), torch.from_numpy(rgb)).numpy()
    assert packed.tobytes() == pack_cloud(xyz, rgb).tobytes()
    assert pack_points(torch.from_numpy(xyz), None).numpy().tobytes() == xyz.tobytes()


def test_back_project_takes_tensor_intrinsics_like_numbers():
    depth = torch.rand(9, 12) * 10 + 0.5
    depth[0, 0] = torch.inf
    image = torch.randint(0, 256, (1, 3, 9, 12), dtype=torch.uint8)
    numbers = back_project(depth, image, (8.0, 9.0, 5.5, 4.0), 2, 8.0, True)
    tensors = back_project(depth, image, tuple(torch.tensor([8.0, 9.0, 5.5, 4.0])), 2,
                           torch.tensor(8.0), True)
    np.testing.assert_array_equal(numbers[0].numpy(), tensors[0].numpy())
    np.testing.assert_array_equal(numbers[1].numpy(), tensors[1].numpy())
    assert torch.isnan(numbers[0][0, 0]).all()


def test_staged_host_copy_equals_the_tensors():
    tensors = {'depth': torch.rand(2, 5, 7), 'near': torch.rand(2, 5, 7) > 0.5,
               'index': torch.randint(0, 3, (5, 7), dtype=torch.int8), 'cloud': None,
               'rgb': torch.randint(0, 256, (3, 3, 3), dtype=torch.uint8)}
    staged = HostCopy(staged=True)(tensors)
    direct = HostCopy()(tensors)  # on the CPU: no copy
    assert staged['cloud'] is None and direct['cloud'] is None
    for key, value in tensors.items():
        if value is None:
            continue
        assert staged[key].dtype == direct[key].dtype and staged[key].shape == tuple(value.shape)
        np.testing.assert_array_equal(staged[key], value.numpy())
        assert not np.shares_memory(staged[key], value.numpy())
        assert np.shares_memory(direct[key], value.numpy())


def test_device_statistics_equal_the_hosts():
    from metric_solver_ros.messages import depth_statistics as host_statistics

    rng = np.random.default_rng(0)
    for shape in ((4, 5), (7, 9), (1, 1), (2, 2), (48, 64)):
        for trial in range(12):
            depth = rng.uniform(0.1, 50.0, size=shape).astype(np.float32)
            depth[rng.random(shape) < 0.3] = np.nan
            depth[rng.random(shape) < 0.2] = np.inf
            if trial == 0:
                depth[:] = np.nan  # nothing defined
            elif trial == 1:
                depth[:] = np.inf  # nothing finite
            near = rng.random(shape) < 0.5
            expected = np.array(host_statistics(depth, near), dtype=np.float32)
            ours = depth_statistics(torch.from_numpy(depth)[None], torch.from_numpy(near)[None])
            np.testing.assert_allclose(ours[0].numpy(), expected, rtol=1e-6, equal_nan=True)


def test_channels_last_weights_give_the_same_depth(model):
    image = camera_image(96, 72)
    plain = DepthEngine(model, device='cpu', precision='fp32').infer(image, (2.0, 10.0))
    nhwc = DepthEngine(create_model(model.config), device='cpu', precision='fp32',
                       channels_last=True)
    nhwc.model.load_state_dict(model.state_dict())
    assert nhwc.model.near_head.scratch.layer1_rn.weight.is_contiguous(
        memory_format=torch.channels_last)
    np.testing.assert_allclose(nhwc.infer(image, (2.0, 10.0)).depth_m, plain.depth_m,
                               rtol=1e-4, atol=1e-5)
