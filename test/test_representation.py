"""The anchor-based depth representation: targets, inverse maps, decoding and fusion."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metric_solver_ros.model import (
    D_TF_EPS,
    DEFAULT_ANCHOR_POOL_M,
    K_TAPER,
    get_config,
)
from metric_solver_ros.model.fusion import decode_covering, fuse_decoded
from metric_solver_ros.model.representation import (
    capped_near_target,
    decode,
    decode_fused,
    depth_to_targets,
    far_limit_m,
    far_to_depth,
    fuse_anchors,
    near_to_depth,
)

REL = 1e-5
# Within this relative distance of the far limit fp32 rounding may decide either way.
LIMIT_MARGIN = 1e-5


def round_trip(depth_m: torch.Tensor, anchor_m: float) -> torch.Tensor:
    """Depth -> targets -> the inverse of the branch the pixel belongs to -> depth."""
    t = depth_to_targets(depth_m, anchor_m)
    near = near_to_depth(t['d_sn'], anchor_m)
    far = far_to_depth(t['d_tf'], anchor_m)
    return torch.where(t['near_valid'], near, far)


def logit(p: torch.Tensor) -> torch.Tensor:
    p = p.double()
    return (torch.log(p) - torch.log1p(-p)).float()


def test_far_limit_value():
    assert far_limit_m(2.0) == pytest.approx(2.0 + math.log(1e6) / 0.025)
    assert far_limit_m(2.0) == pytest.approx(554.62, abs=0.01)
    assert far_limit_m(10.0, k=0.05, eps=1e-3) == pytest.approx(10.0 + math.log(1e3) / 0.05)


@pytest.mark.parametrize('anchor_m', DEFAULT_ANCHOR_POOL_M)
def test_round_trip_dense_grid_every_pool_anchor(anchor_m):
    limit = far_limit_m(anchor_m)
    d = torch.logspace(math.log10(1e-3), math.log10(limit * (1 - LIMIT_MARGIN)), 20001)
    d = torch.cat([d, torch.tensor([anchor_m, limit * (1 - LIMIT_MARGIN)])]).float()
    back = round_trip(d, anchor_m)
    assert torch.isfinite(back).all()
    rel = ((back.double() - d.double()).abs() / d.double()).max().item()
    assert rel <= REL, rel


@settings(max_examples=300, deadline=None)
@given(anchor_m=st.sampled_from(DEFAULT_ANCHOR_POOL_M), fraction=st.floats(0.0, 1.0))
def test_round_trip_property(anchor_m, fraction):
    limit = far_limit_m(anchor_m) * (1 - LIMIT_MARGIN)
    d_value = math.exp(math.log(1e-3) + fraction * (math.log(limit) - math.log(1e-3)))
    d = torch.tensor([d_value], dtype=torch.float32)
    back = round_trip(d, anchor_m)
    assert abs(back.item() - d.item()) <= REL * d.item()


@settings(max_examples=200, deadline=None)
@given(anchor_m=st.sampled_from(DEFAULT_ANCHOR_POOL_M),
       excess=st.floats(LIMIT_MARGIN, 1e6, allow_nan=False))
def test_beyond_far_limit_decodes_to_inf(anchor_m, excess):
    d = torch.tensor([far_limit_m(anchor_m) * (1 + excess), math.inf])
    back = round_trip(d, anchor_m)
    assert torch.isposinf(back).all()


def test_sky_target_is_exactly_zero_and_valid_far():
    t = depth_to_targets(torch.tensor([math.inf]), 10.0)
    assert t['d_tf'].item() == 0.0
    assert t['valid'].item() and t['far_valid'].item() and not t['near_valid'].item()
    assert t['mask'].item() == 0.0
    assert torch.isposinf(far_to_depth(t['d_tf'], 10.0)).all()


@pytest.mark.parametrize('anchor_m', [0.5, 6.0, 120.0])
def test_continuity_at_the_anchor(anchor_m):
    t = depth_to_targets(torch.tensor([anchor_m]), anchor_m)
    assert t['d_sn'].item() == 1.0 and t['d_tf'].item() == 1.0 and t['mask'].item() == 1.0
    assert t['near_valid'].item() and t['far_valid'].item()
    assert near_to_depth(t['d_sn'], anchor_m).item() == pytest.approx(anchor_m, rel=1e-7)
    assert far_to_depth(t['d_tf'], anchor_m).item() == pytest.approx(anchor_m, rel=1e-7)
    # Just below and just above: both branches approach a from their side.
    eps = 1e-4 * anchor_m
    below = round_trip(torch.tensor([anchor_m - eps]), anchor_m).item()
    above = round_trip(torch.tensor([anchor_m + eps]), anchor_m).item()
    assert below < anchor_m < above
    assert above - below == pytest.approx(2 * eps, rel=1e-2)


@pytest.mark.parametrize('anchor_m', [0.5, 4.0, 80.0])
def test_targets_and_decoding_are_monotonic(anchor_m):
    d = torch.logspace(-3, math.log10(far_limit_m(anchor_m) * 0.999), 5000)
    t = depth_to_targets(d, anchor_m)
    near, far = t['near_valid'], t['far_valid']
    assert (torch.diff(t['d_sn'][near]) >= 0).all()
    assert (torch.diff(t['d_tf'][far]) <= 0).all()
    assert (torch.diff(round_trip(d, anchor_m)) >= 0).all()
    # Decoding from logits is monotonic too.
    depth = far_to_depth(torch.linspace(1.0, 1e-6, 1000), anchor_m)
    assert (torch.diff(depth) >= 0).all()


def test_invalid_pixels_are_excluded_from_every_mask():
    d = torch.tensor([0.0, math.nan, -1.0, -math.inf, 1.0, 5.0, math.inf])
    t = depth_to_targets(d, 2.0)
    invalid = slice(0, 4)
    for key in ('valid', 'near_valid', 'far_valid'):
        assert not t[key][invalid].any(), key
    for key in ('mask', 'd_sn', 'd_tf'):
        assert (t[key][invalid] == 0).all(), key
        assert torch.isfinite(t[key]).all(), key
    assert t['valid'][4:].all()
    assert t['near_valid'].tolist() == [False] * 4 + [True, False, False]
    assert t['far_valid'].tolist() == [False] * 4 + [False, True, True]


def test_capped_near_target_is_the_near_target_below_the_anchor_and_1_beyond():
    d = torch.tensor([0.0, math.nan, -1.0, -math.inf, 1.0, 2.0, 5.0, math.inf])
    capped = capped_near_target(d, 2.0)
    assert capped.dtype == torch.float32
    assert capped.tolist() == [0.0] * 4 + [0.5, 1.0, 1.0, 1.0]  # sky: d / a = inf -> 1
    t = depth_to_targets(d, 2.0)  # the same validity rule, and d_sn where near
    assert torch.equal(capped[t['near_valid']], t['d_sn'][t['near_valid']])
    per_image = capped_near_target(torch.full((2, 1, 1, 1), 3.0),
                                   torch.tensor([2.0, 4.0]).view(2, 1, 1, 1))
    assert per_image.flatten().tolist() == [1.0, 0.75]


def test_per_image_anchor_broadcast_and_dtypes():
    d = torch.full((2, 1, 3, 4), 3.0, dtype=torch.float16)
    anchors = torch.tensor([2.0, 4.0]).view(2, 1, 1, 1)
    t = depth_to_targets(d, anchors)
    assert t['d_sn'].dtype == torch.float32 and t['valid'].dtype == torch.bool
    assert (t['mask'][0] == 0).all() and (t['mask'][1] == 1).all()
    assert torch.allclose(t['d_sn'][1], torch.tensor(0.75))
    assert torch.allclose(t['d_tf'][0], torch.tensor(math.exp(-K_TAPER * 1.0)))


def make_outputs(d_sn, near_prob, d_tf, dtype=torch.float32):
    return {'d_sn_logit': logit(d_sn).to(dtype), 'mask_logit': logit(near_prob).to(dtype),
            'd_tf_logit': logit(d_tf).to(dtype)}


def test_decode_fuses_near_and_far_with_the_mask():
    config = get_config('tiny')
    d_sn = torch.tensor([0.5, 0.25, 0.9, 0.9]).view(1, 1, 2, 2)
    prob = torch.tensor([0.9, 0.6, 0.4, 0.1]).view(1, 1, 2, 2)
    d_tf = torch.tensor([0.5, 0.5, 0.5, 1e-8]).view(1, 1, 2, 2)
    out = decode(make_outputs(d_sn, prob, d_tf), torch.tensor([4.0]), config)
    far = 4.0 - math.log(0.5) / K_TAPER
    assert out['near'].flatten().tolist() == [True, True, False, False]
    expected = torch.tensor([2.0, 1.0, far, math.inf])
    assert torch.allclose(out['depth_m'].flatten(), expected, rtol=1e-5)
    assert out['depth_m'].dtype == torch.float32 and out['depth_m'].shape == (1, 1, 2, 2)
    assert torch.allclose(out['near_prob'].flatten(), prob.flatten(), atol=1e-6)
    assert torch.allclose(out['depth_near_m'].flatten(), 4.0 * d_sn.flatten(), rtol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_decode_of_half_precision_logits_is_exact_for_far_depths(dtype):
    config = get_config('tiny')
    # Logits exactly representable in fp16 / bf16; d_tf = sigmoid(z) far below fp16 resolution.
    z = torch.tensor([-2.0, -8.0, -10.0, -12.0, -13.5, -14.0, -20.0]).view(1, 1, 1, 7)
    outputs = {'d_sn_logit': torch.zeros_like(z), 'mask_logit': torch.full_like(z, -5.0),
               'd_tf_logit': z}
    half = {k: v.to(dtype) for k, v in outputs.items()}
    anchors = torch.tensor([10.0])
    out = decode(half, anchors, config)
    reference = 10.0 + torch.nn.functional.softplus(-z.double()) / K_TAPER
    reference[z.double() < math.log(D_TF_EPS)] = math.inf  # d_tf < eps beyond about z = -13.8
    assert torch.equal(torch.isinf(out['depth_m']), torch.isinf(reference))
    finite = torch.isfinite(reference)
    assert torch.allclose(out['depth_m'][finite].double(), reference[finite], rtol=1e-6)
    assert out['depth_m'][0, 0, 0, 4].item() == pytest.approx(10.0 + 13.5 / K_TAPER, rel=1e-5)


def test_decode_ablation_variants():
    d_sn = torch.tensor([0.5, 0.995]).view(1, 1, 1, 2)
    prob = torch.tensor([0.1, 0.9]).view(1, 1, 1, 2)
    d_tf = torch.tensor([0.5, 0.5]).view(1, 1, 1, 2)
    outputs = make_outputs(d_sn, prob, d_tf)
    # Without a mask head: near where d_sn < 0.99, whatever mask logits say.
    no_mask = get_config('tiny', mask_head=False)
    out = decode({k: v for k, v in outputs.items() if k != 'mask_logit'}, torch.tensor([2.0]),
                 no_mask)
    assert out['near'].flatten().tolist() == [True, False]
    assert out['depth_m'][0, 0, 0, 0].item() == pytest.approx(1.0, rel=1e-6)
    assert out['depth_m'][0, 0, 0, 1].item() == pytest.approx(2.0 - math.log(0.5) / K_TAPER)
    # Without a far head: d_sn * a everywhere, capped at the anchor.
    no_far = get_config('tiny', far_head=False)
    out = decode({k: v for k, v in outputs.items() if k != 'd_tf_logit'}, torch.tensor([2.0]),
                 no_far)
    assert torch.allclose(out['depth_m'].flatten(), torch.tensor([1.0, 1.99]), rtol=1e-5)
    assert (out['depth_m'] <= 2.0).all()
    assert torch.equal(out['depth_far_m'], out['depth_near_m'])


def fuse_reference(near_m, far_m, near, anchors):
    """Per-pixel Python loop of METHOD.md's rule."""
    order = sorted(range(len(anchors)), key=lambda i: anchors[i])
    h, w = near.shape[-2:]
    depth = torch.empty(1, 1, h, w)
    index = torch.empty(1, 1, h, w, dtype=torch.long)
    for y in range(h):
        for x in range(w):
            chosen = next((i for i in order if near[i, 0, y, x]), None)
            if chosen is None:
                index[0, 0, y, x] = order[-1]
                depth[0, 0, y, x] = far_m[order[-1], 0, y, x]
            else:
                index[0, 0, y, x] = chosen
                depth[0, 0, y, x] = near_m[chosen, 0, y, x]
    return depth, index


def test_fuse_anchors_constructed_case():
    anchors = torch.tensor([10.0, 2.0, 40.0])  # deliberately unsorted
    near = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]], dtype=torch.bool)
    near = near.view(3, 1, 1, 4)
    near_m = torch.tensor([[5.0, 6.0, 7.0, 8.0], [1.0, 1.5, 1.8, 1.9], [20.0, 21.0, 22.0, 23.0]])
    far_m = torch.tensor([[11.0, 12.0, 13.0, 14.0], [3.0, 3.0, 3.0, 3.0],
                          [50.0, 60.0, 70.0, math.inf]])
    depth, near_any, index = fuse_anchors(near_m.view(3, 1, 1, 4), far_m.view(3, 1, 1, 4),
                                          near, anchors)
    # pixel 0: only 10 m says near; 1: all say near, 2 m is smallest; 2: 2 m and 40 m -> 2 m;
    # 3: nobody -> far of the largest anchor (40 m), +inf kept.
    assert index.flatten().tolist() == [0, 1, 1, 2]
    assert torch.equal(depth.flatten(), torch.tensor([5.0, 1.5, 1.8, math.inf]))
    assert near_any.flatten().tolist() == [True, True, True, False]
    assert depth.shape == near_any.shape == index.shape == (1, 1, 1, 4)
    assert index.dtype == torch.long and near_any.dtype == torch.bool


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_fuse_anchors_matches_the_per_pixel_rule(num_anchors, seed):
    g = torch.Generator().manual_seed(seed)
    anchors = torch.tensor(DEFAULT_ANCHOR_POOL_M)[torch.randperm(10, generator=g)[:num_anchors]]
    near = torch.rand(num_anchors, 1, 5, 6, generator=g) < 0.4
    near_m = torch.rand(num_anchors, 1, 5, 6, generator=g) * 10
    far_m = torch.rand(num_anchors, 1, 5, 6, generator=g) * 100
    depth, near_any, index = fuse_anchors(near_m, far_m, near, anchors)
    ref_depth, ref_index = fuse_reference(near_m, far_m, near, anchors.tolist())
    assert torch.equal(index, ref_index)
    assert torch.equal(depth, ref_depth)
    assert torch.equal(near_any, near.any(0, keepdim=True))


def test_fuse_anchors_rejects_mismatched_inputs():
    x = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match='anchors'):
        fuse_anchors(x, x, x.bool(), torch.tensor([1.0, 2.0, 4.0]))


def _random_logits(num_anchors, seed, switches, ascending=False):
    """``(config, anchors, logits)``: pool anchors in random (or ascending) order, 7x9 maps."""
    config = get_config('tiny', **switches)
    g = torch.Generator().manual_seed(seed)
    anchors = torch.tensor(DEFAULT_ANCHOR_POOL_M)[torch.randperm(10, generator=g)[:num_anchors]]
    # logits spread wide enough to reach saturated, near/far and beyond-the-limit pixels
    outputs = {key: torch.randn(num_anchors, 1, 7, 9, generator=g) * 12
               for key in ('d_sn_logit', 'mask_logit', 'd_tf_logit')}
    return config, anchors.sort().values if ascending else anchors, outputs


_LOGIT_CASES = (st.integers(1, 5), st.integers(0, 2**31 - 1),
                st.sampled_from([{}, {'mask_head': False}, {'far_head': False}]))


@settings(max_examples=40, deadline=None)
@given(*_LOGIT_CASES)
def test_decode_fused_equals_decoding_every_anchor_then_fusing(num_anchors, seed, switches):
    """The engine's shortcut (decode only what fusion reads) equals the long way."""
    config, anchors, outputs = _random_logits(num_anchors, seed, switches)
    decoded = decode(outputs, anchors, config)
    expected = fuse_anchors(decoded['depth_near_m'], decoded['depth_far_m'], decoded['near'],
                            anchors)
    # the far map of the largest anchor alone is enough
    only_largest = dict(outputs, d_tf_logit=outputs['d_tf_logit'][anchors.argmax()][None])
    for fused in (decode_fused(outputs, anchors, config),
                  decode_fused(only_largest, anchors, config)):
        # same pixels, same anchors; depth equal to float32 rounding (vectorised sigmoid may
        # round a lane differently from the one-map-per-anchor call: seen up to 2 ulp)
        assert torch.equal(fused[1], expected[1]) and torch.equal(fused[2], expected[2])
        torch.testing.assert_close(fused[0], expected[0], rtol=1e-6, atol=0)
        assert torch.equal(torch.isinf(fused[0]), torch.isinf(expected[0]))


@settings(max_examples=40, deadline=None)
@given(*_LOGIT_CASES)
def test_decode_covering_equals_decoding_every_anchor_then_fusing(num_anchors, seed, switches):
    """The engine's covering shortcut (no per-anchor far maps, no anchor pick) = the long way."""
    config, anchors, outputs = _random_logits(num_anchors, seed, switches, ascending=True)
    decoded = decode(outputs, anchors, config)
    expected = fuse_decoded(decoded, anchors, config, 'covering')
    only_largest = dict(outputs, d_tf_logit=outputs['d_tf_logit'][-1:])  # as the engine gives
    for depth, near_any in (decode_covering(outputs, anchors, config),
                            decode_covering(only_largest, anchors, config)):
        assert torch.equal(near_any, decoded['near'].any(dim=0, keepdim=True))
        assert torch.equal(torch.isinf(depth), torch.isinf(expected))
        torch.testing.assert_close(depth, expected, rtol=1e-6, atol=0)
