"""The inference engine on CPU: shapes, units, fusion, feature cache, devices, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from node_harness import camera_image, small_config

from metric_solver_ros.engine import (
    DepthEngine,
    EngineError,
    PointsRequest,
    network_input_size,
    resolve_device,
    resolve_precision,
)
from metric_solver_ros.model import create_model
from metric_solver_ros.model.fusion import DEFAULT_FUSION, FUSION_RULES, fuse_decoded
from metric_solver_ros.model.representation import decode, far_limit_m, fuse_anchors

CONFIG = small_config()


@pytest.fixture(scope='module')
def engine():
    torch.manual_seed(0)
    return DepthEngine(create_model(CONFIG), device='cpu', precision='fp32')


@pytest.fixture(scope='module')
def image():
    return camera_image(96, 72)


def test_network_input_size_keeps_aspect_in_patch_multiples():
    assert network_input_size((480, 640), 266, 14) == (266, 350)
    assert network_input_size((640, 480), 266, 14) == (350, 266)
    assert network_input_size((375, 1242), 266, 14) == (266, 882)
    assert network_input_size((480, 640), 266, 14, 'square') == (266, 266)
    assert network_input_size((480, 640), 260, 14) == (266, 350)  # snapped to 14
    with pytest.raises(EngineError, match='resize mode'):
        network_input_size((480, 640), 266, 14, 'stretch')


def test_output_is_metric_depth_at_image_resolution(engine, image):
    result = engine.infer(image, 10.0)
    assert result.depth_m.shape == (72, 96) and result.depth_m.dtype == np.float32
    assert result.near.shape == (72, 96) and result.near.dtype == bool
    assert result.anchors_m == (10.0,)
    depth = result.depth_m
    assert not np.isnan(depth).any()
    assert (depth[np.isfinite(depth)] > 0).all()
    # Near pixels are within the anchor, far pixels beyond it (the representation's contract).
    assert (depth[result.near] <= 10.0 + 1e-4).all()
    assert (depth[~result.near] >= 10.0 - 1e-4).all()
    for key in ('preprocess', 'encoder', 'decoder', 'fusion', 'total'):
        assert result.timings_ms[key] >= 0.0


def test_engine_matches_the_model_and_decode_by_hand(engine, image):
    """Resize + normalise + forward + upsample logits + decode, done by hand, equals infer."""
    import torch.nn.functional as F

    result = engine.infer(image, 4.0)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    size = network_input_size(image.shape[:2], min(CONFIG.input_size), 14)
    x = F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)
    mean = torch.tensor(CONFIG.mean).view(1, 3, 1, 1)
    std = torch.tensor(CONFIG.std).view(1, 3, 1, 1)
    with torch.no_grad():
        outputs = engine.model((x - mean) / std, torch.tensor([4.0]))
    logits = {k: F.interpolate(v, size=image.shape[:2], mode='bilinear', align_corners=False)
              for k, v in outputs.items()}
    expected = decode(logits, torch.tensor([4.0]), CONFIG)
    np.testing.assert_allclose(result.depth_m, expected['depth_m'][0, 0].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(result.near, expected['near'][0, 0].numpy())


def test_bgr_input_equals_rgb_input(engine, image):
    rgb = engine.infer(image, 2.0).depth_m
    bgr = engine.infer(np.ascontiguousarray(image[..., ::-1]), 2.0, color_order='bgr').depth_m
    np.testing.assert_array_equal(rgb, bgr)


def test_tensor_input_equals_numpy_input(engine, image):
    from_numpy = engine.infer(image, 2.0).depth_m
    from_tensor = engine.infer(torch.from_numpy(image.copy()), 2.0).depth_m
    np.testing.assert_array_equal(from_numpy, from_tensor)


def test_redecode_equals_a_full_run(engine, image):
    engine.infer(image, 10.0)
    redecoded = engine.redecode([2.0, 40.0])
    full = engine.infer(image, [2.0, 40.0])
    np.testing.assert_array_equal(redecoded.depth_m, full.depth_m)
    np.testing.assert_array_equal(redecoded.near, full.near)
    assert redecoded.timings_ms['encoder'] == 0.0


def test_batched_anchors_equal_single_anchor_runs(engine, image):
    each = engine.infer_each(image, [40.0, 2.0, 10.0])
    assert [r.anchors_m for r in each] == [(40.0,), (2.0,), (10.0,)]
    for result in each:
        single = engine.infer(image, result.anchors_m[0])
        np.testing.assert_allclose(result.depth_m, single.depth_m, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(result.near, single.near)


def test_finest_fusion_follows_the_rule_on_the_decoded_anchors(engine, image):
    anchors = [2.0, 10.0, 40.0]
    each = engine.infer_each(image, anchors)
    engine.fusion = 'finest'
    try:
        fused = engine.infer(image, anchors)
    finally:
        engine.fusion = DEFAULT_FUSION
    assert fused.anchors_m == tuple(anchors) and fused.anchor_index is not None
    nears = np.stack([r.near for r in each])
    for v in range(0, 72, 5):
        for u in range(0, 96, 7):
            said_near = [i for i in range(3) if nears[i, v, u]]
            chosen = said_near[0] if said_near else 2
            assert fused.anchor_index[v, u] == chosen
            assert fused.near[v, u] == bool(said_near)
            assert fused.depth_m[v, u] == pytest.approx(each[chosen].depth_m[v, u], rel=1e-5)


@pytest.mark.parametrize('rule', FUSION_RULES)
def test_every_fusion_rule_through_the_engine_equals_the_rule_on_decoded_outputs(engine, image,
                                                                                 rule):
    anchors = (2.0, 10.0, 40.0)
    engine.fusion = rule
    try:
        fused = engine.infer(image, anchors)
    finally:
        engine.fusion = DEFAULT_FUSION
    cache = engine._cache
    with torch.inference_mode():
        anchors_t = torch.tensor(anchors)
        outputs = engine.model.decode(cache.features, anchors_t, cache.patch_hw)
        logits = {k: torch.nn.functional.interpolate(v.float(), size=cache.image_hw,
                                                     mode='bilinear', align_corners=False)
                  for k, v in outputs.items()}
        expected = fuse_decoded(decode(logits, anchors_t, engine.config), anchors_t,
                                engine.config, rule)
    np.testing.assert_allclose(fused.depth_m, expected[0, 0].numpy(), rtol=1e-5)
    assert fused.anchors_m == anchors and np.isfinite(fused.depth_m).any()


def test_unknown_fusion_rule_is_refused():
    with pytest.raises(EngineError, match='fusion'):
        DepthEngine(create_model('tiny'), device='cpu', fusion='best')


def test_fuse_anchors_on_constructed_outputs():
    anchors = torch.tensor([10.0, 2.0, 40.0])  # any order
    near = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool).T.reshape(3, 1, 1, 3)
    depth_near = torch.tensor([[5.0, 6.0, 7.0], [1.0, 1.5, 1.9], [30.0, 31.0, 32.0]]).reshape(
        3, 1, 1, 3)
    depth_far = torch.tensor([[11.0, 12.0, 13.0], [3.0, 4.0, 5.0], [41.0, 42.0, 43.0]]).reshape(
        3, 1, 1, 3)
    # pixel 0: 10 m says near -> 5.0; pixel 1: 2 m and 10 m say near -> the 2 m one (1.5);
    # pixel 2: only 40 m says near -> 32.0.
    depth, near_any, index = fuse_anchors(depth_near, depth_far, near, anchors)
    assert depth.flatten().tolist() == [5.0, 1.5, 32.0]
    assert index.flatten().tolist() == [0, 1, 2] and near_any.all()
    none_near = torch.zeros_like(near)
    depth, near_any, index = fuse_anchors(depth_near, depth_far, none_near, anchors)
    assert depth.flatten().tolist() == [41.0, 42.0, 43.0] and not near_any.any()


def test_far_limit_gives_inf_and_points_back_project(engine, image):
    engine.far_limit_m = 12.0
    try:
        result = engine.infer(image, 10.0, points=PointsRequest((80.0, 80.0, 47.5, 35.5), 3,
                                                                 20.0, True))
    finally:
        engine.far_limit_m = None
    assert (result.depth_m[np.isfinite(result.depth_m)] <= 12.0).all()
    points, rgb = result.points_m, result.points_rgb
    assert points.shape == (24, 32, 3) and rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, image[::3, ::3])
    z = result.depth_m[::3, ::3]
    finite = np.isfinite(z)
    np.testing.assert_allclose(points[..., 2][finite], z[finite], rtol=1e-6)
    u = np.arange(0, 96, 3)[None, :].repeat(24, 0)
    np.testing.assert_allclose(points[..., 0][finite], ((u - 47.5) * z / 80.0)[finite], rtol=1e-5,
                               atol=1e-5)
    assert np.isnan(points[~finite]).all()


def test_flip_tta_is_mirror_symmetric():
    torch.manual_seed(1)
    engine = DepthEngine(create_model(CONFIG), device='cpu', flip_tta=True)
    image = camera_image(84, 56)
    depth = engine.infer(image, 4.0).depth_m
    mirrored = engine.infer(np.ascontiguousarray(image[:, ::-1]), 4.0).depth_m
    np.testing.assert_allclose(depth, mirrored[:, ::-1], rtol=1e-4, atol=1e-4)
    engine.flip_tta = False
    assert not engine.has_frame  # switching TTA drops the cached features


def test_flip_tta_changed_during_a_frame_does_not_mix_into_it():
    torch.manual_seed(1)
    model = create_model(CONFIG)
    image = camera_image(84, 56)
    plain = DepthEngine(model, device='cpu').infer(image, [2.0, 4.0]).depth_m
    raced = DepthEngine(model, device='cpu')

    def encode_and_switch(x):  # flip_tta turned on mid-frame (the executor thread can)
        raced.flip_tta = True
        return model.encode(x)

    raced._encode = encode_and_switch
    result = raced.infer(image, [2.0, 4.0])  # was: mirror-averaged with itself, or an error
    np.testing.assert_allclose(result.depth_m, plain, rtol=1e-5, atol=1e-5)
    assert raced.flip_tta and not np.allclose(plain, plain[:, ::-1], atol=1e-3)


@pytest.mark.parametrize('anchors, message', [
    ([], 'no anchor'), (0.0, '> 0'), (-1.0, '> 0'), (math.nan, 'finite'), (math.inf, 'finite'),
    (0.1, 'outside'), (500.0, 'outside'), (['far'], 'not a number'), ([True], 'not a number'),
    (list(range(1, 11)), 'at most'),
])
def test_bad_anchors_are_rejected_with_a_reason(engine, image, anchors, message):
    with pytest.raises(EngineError, match=message):
        engine.infer(image, anchors)


@pytest.mark.parametrize('bad, message', [
    (np.zeros((10, 10), np.uint8), 'HxWx3 uint8'),
    (np.zeros((10, 10, 3), np.float32), 'HxWx3 uint8'),
    (np.zeros((1, 10, 3), np.uint8), 'too small'),
    (np.zeros((8, 640, 3), np.uint8), 'aspect ratio above 8:1'),
    ('image.png', 'numpy array or tensor'),
])
def test_bad_images_are_rejected_with_a_reason(engine, bad, message):
    with pytest.raises(EngineError, match=message):
        engine.infer(bad, 2.0)


def test_redecode_without_a_frame_is_an_error():
    engine = DepthEngine(create_model(CONFIG), device='cpu')
    with pytest.raises(EngineError, match='no frame'):
        engine.redecode(2.0)


def test_devices_and_precisions():
    assert resolve_device('cpu').type == 'cpu'
    assert resolve_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match='CUDA is not available'):
            resolve_device('cuda')
    with pytest.raises(EngineError, match='unknown device'):
        resolve_device('tpu')
    assert resolve_precision('auto', torch.device('cpu')) == torch.float32
    with pytest.raises(EngineError, match='fp16 is not supported on the CPU'):
        resolve_precision('fp16', torch.device('cpu'))
    with pytest.raises(EngineError, match='unknown precision'):
        resolve_precision('int8', torch.device('cpu'))


def test_bf16_network_still_decodes_far_depths(image):
    torch.manual_seed(0)
    model = create_model(CONFIG)
    fp32 = DepthEngine(model, device='cpu', precision='fp32').infer(image, 80.0).depth_m
    torch.manual_seed(0)
    bf16 = DepthEngine(create_model(CONFIG), device='cpu', precision='bf16').infer(
        image, 80.0).depth_m
    both = np.isfinite(fp32) & np.isfinite(bf16)
    assert both.mean() > 0.5
    assert np.nanmedian(np.abs(bf16[both] - fp32[both]) / fp32[both]) < 0.05
    assert far_limit_m(80.0) > 600.0


def test_out_of_memory_drops_the_frame_and_degrade_trades_resolution(image):
    """Device OOM cannot happen on this CPU machine: raise torch's OOM error from the encoder."""
    from metric_solver_ros.engine import MIN_INPUT_SIZE_PX, EngineOutOfMemory

    torch.manual_seed(0)
    engine = DepthEngine(create_model(CONFIG), device='cpu', input_size=168)
    failures = {'left': 2}

    def fail(module, args):
        if failures['left']:
            failures['left'] -= 1
            raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    handle = engine.model.pretrained.patch_embed.register_forward_pre_hook(fail)
    try:
        for _ in range(2):
            with pytest.raises(EngineOutOfMemory, match='out of memory at network input short '
                                                        'side 168 px: frame dropped'):
                engine.infer(image, 2.0)
            assert not engine.has_frame
        assert engine.infer(image, 2.0).depth_m.shape == (72, 96)  # usable again
    finally:
        handle.remove()
    assert engine.degrade() == 'network input reduced from 168 to 126 px (short side)'
    assert engine.infer(image, 2.0).depth_m.shape == (72, 96)
    assert engine.degrade() == f'network input reduced from 126 to {MIN_INPUT_SIZE_PX} px ' \
                               '(short side)'
    with pytest.raises(EngineError, match='smallest input size on the CPU'):
        engine.degrade()


def test_cuda_graphs_are_a_no_op_on_the_cpu_and_exclude_compile(engine, image):
    torch.manual_seed(0)
    graphed = DepthEngine(create_model(CONFIG), device='cpu', precision='fp32', cuda_graphs=True)
    assert not graphed.cuda_graphs  # asked for, but the CPU has no graphs: eager, same numbers
    expected = engine.infer(image, (2.0, 10.0)).depth_m
    np.testing.assert_array_equal(graphed.infer(image, (2.0, 10.0)).depth_m, expected)
    with pytest.raises(EngineError, match='compile and cuda_graphs'):
        DepthEngine(create_model(CONFIG), device='cpu', compile=True, cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_graphs_replay_equals_eager_on_cuda(image):
    torch.manual_seed(0)
    model = create_model(CONFIG)
    eager = DepthEngine(model, device='cuda', precision='fp32')
    graphed = DepthEngine(model, device='cuda', precision='fp32', cuda_graphs=True)
    frames = [image, image[::-1].copy(), np.ascontiguousarray(image[:, ::-1])]
    for anchors in ((10.0,), (2.0, 10.0, 40.0)):
        for frame in frames:  # replays overwrite the static buffers: each frame must be its own
            np.testing.assert_allclose(graphed.infer(frame, anchors).depth_m,
                                       eager.infer(frame, anchors).depth_m, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(graphed.redecode(5.0).depth_m, eager.redecode(5.0).depth_m,
                                   rtol=1e-4)
    # the encoder; the decoder with its finish for 1 and 3 anchors (a re-decode replays one)
    assert graphed.cuda_graphs and len(graphed._graphs) == 1 and len(graphed._frame_graphs) == 2
    request = PointsRequest((80.0, 80.0, 47.5, 35.5), 2, 20.0, True)
    for intrinsics in ((80.0, 80.0, 47.5, 35.5), (60.0, 70.0, 40.0, 30.0)):  # one graph for any
        request = PointsRequest(intrinsics, 2, 20.0, True)
        ours, theirs = graphed.infer(image, 10.0, request), eager.infer(image, 10.0, request)
        np.testing.assert_allclose(ours.points_m, theirs.points_m, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(ours.points_rgb, theirs.points_rgb)
        assert ours.cloud.shape == (36, 48, 4)
    assert len(graphed._frame_graphs) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_results_carry_the_depth_info_statistics(image):
    from metric_solver_ros.messages import depth_statistics

    torch.manual_seed(0)
    engine = DepthEngine(create_model(CONFIG), device='cuda', precision='fp32', far_limit_m=12.0)
    for result in [engine.infer(image, (2.0, 10.0))] + engine.infer_each(image, (2.0, 10.0)):
        np.testing.assert_allclose(result.statistics,
                                   depth_statistics(result.depth_m, result.near), rtol=1e-6)


def _relative_error_quantiles(depth_m: np.ndarray, expected_m: np.ndarray) -> tuple[float, float]:
    """Median and 99th percentile of |depth - expected| / expected where both are finite."""
    both = np.isfinite(depth_m) & np.isfinite(expected_m)
    assert both.mean() > 0.5
    error = np.abs(depth_m[both] - expected_m[both]) / expected_m[both]
    return float(np.median(error)), float(np.quantile(error, 0.99))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_engine_matches_the_cpu(engine, image):
    anchors = (2.0, 10.0, 40.0)
    expected = engine.infer(image, anchors).depth_m
    torch.manual_seed(0)  # the engine fixture's weights
    fp32 = DepthEngine(create_model(CONFIG), device='cuda', precision='fp32')
    median, p99 = _relative_error_quantiles(fp32.infer(image, anchors).depth_m, expected)
    assert median < 1e-3 and p99 < 1e-2  # TF32 convolutions (cuDNN's default) differ slightly
    on_device = fp32.infer(torch.from_numpy(image).cuda(), anchors).depth_m
    np.testing.assert_array_equal(on_device, fp32.infer(image, anchors).depth_m)
    torch.manual_seed(0)
    half = DepthEngine(create_model(CONFIG), device='cuda', precision='auto')
    assert half.dtype in (torch.bfloat16, torch.float16)
    median, _ = _relative_error_quantiles(half.infer(image, anchors).depth_m, expected)
    assert median < 0.05
