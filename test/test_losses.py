"""Hand-computed checks of the Metric-Solver losses (metric_solver_ros.losses)."""

from __future__ import annotations

import math

import pytest
import torch

from metric_solver_ros.losses import (
    LossWeights,
    consistency_loss,
    masked_mean,
    metric_solver_loss,
    resize_depth_nearest,
)
from metric_solver_ros.model import get_config
from metric_solver_ros.model.representation import soft_fused_depth

FULL = get_config('tiny')
NO_MASK = get_config('tiny', mask_head=False)
ONE_HEAD = get_config('tiny', far_head=False)
K = FULL.k
INF = math.inf
NAN = math.nan
LN2 = math.log(2.0)
LOGIT_075 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def _outputs(shape, d_sn=0.0, mask=0.0, d_tf=0.0, requires_grad=False, config=FULL):
    """Constant logit maps of ``shape``."""
    out = {'d_sn_logit': torch.full(shape, float(d_sn), requires_grad=requires_grad)}
    if config.mask_head:
        out['mask_logit'] = torch.full(shape, float(mask), requires_grad=requires_grad)
    if config.far_head:
        out['d_tf_logit'] = torch.full(shape, float(d_tf), requires_grad=requires_grad)
    return out


def _depth(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(1, 1, len(rows), len(rows[0]))


def test_exact_values_near_far_sky_invalid():
    # anchor 2 m; pixels: 0.5 m (near), 4 m (far), sky (far, target 0), 0 (invalid).
    depth = _depth([[0.5, 4.0], [INF, 0.0]])
    outputs = _outputs((1, 1, 2, 2))  # every sigmoid = 0.5
    losses = metric_solver_loss(outputs, depth, torch.tensor([2.0]), FULL)
    sn = (0.5 - 0.25) ** 2
    tf = ((0.5 - math.exp(-K * 2.0)) ** 2 + (0.5 - 0.0) ** 2) / 2
    mask = LN2  # BCE of logit 0 is ln 2 whatever the target, over the 3 valid pixels
    assert losses['loss_sn'].item() == pytest.approx(sn, rel=1e-6)
    assert losses['loss_tf'].item() == pytest.approx(tf, rel=1e-6)
    assert losses['loss_mask'].item() == pytest.approx(mask, rel=1e-6)
    assert losses['loss'].item() == pytest.approx(sn + tf + 0.05 * mask, rel=1e-6)
    assert losses['near_fraction'].item() == pytest.approx(1 / 3)
    assert losses['loss'].dtype == torch.float32


def test_exact_bce_with_nonzero_logits_and_weights():
    # mask logit ln 3 (p = 0.75): near pixel BCE -ln 0.75, far pixels -ln 0.25.
    depth = _depth([[1.0, 3.0, NAN]])
    outputs = _outputs((1, 1, 1, 3), d_sn=LOGIT_075, mask=LOGIT_075, d_tf=LOGIT_075)
    weights = LossWeights(sn=2.0, tf=3.0, mask=0.5)
    losses = metric_solver_loss(outputs, depth, torch.tensor([2.0]), FULL, weights)
    sn = (0.75 - 0.5) ** 2
    tf = (0.75 - math.exp(-K * 1.0)) ** 2
    mask = (-math.log(0.75) - math.log(0.25)) / 2
    assert losses['loss_mask'].item() == pytest.approx(mask, rel=1e-6)
    assert losses['loss'].item() == pytest.approx(2 * sn + 3 * tf + 0.5 * mask, rel=1e-6)


def test_pixel_at_anchor_is_near_and_far():
    depth = _depth([[2.0]])
    outputs = _outputs((1, 1, 1, 1))
    losses = metric_solver_loss(outputs, depth, torch.tensor([2.0]), FULL)
    assert losses['loss_sn'].item() == pytest.approx(0.25)  # target 1
    assert losses['loss_tf'].item() == pytest.approx(0.25)  # target exp(0) = 1


def test_means_pool_pixels_over_the_batch():
    # Image 0: anchor 1, two near pixels (0.5, 1.0); image 1: anchor 10, one near pixel (5).
    depth = torch.tensor([[[[0.5, 1.0]]], [[[5.0, NAN]]]])
    outputs = _outputs((2, 1, 1, 2))
    losses = metric_solver_loss(outputs, depth, torch.tensor([1.0, 10.0]), FULL)
    # Pooled mean over the 3 near pixels, not a mean of per-image means.
    expected = ((0.5 - 0.5) ** 2 + (0.5 - 1.0) ** 2 + (0.5 - 0.5) ** 2) / 3
    assert losses['loss_sn'].item() == pytest.approx(expected, rel=1e-6)
    assert losses['loss_tf'].item() == pytest.approx((0.5 - 1.0) ** 2, rel=1e-6)  # 1 m at a = 1


def test_empty_near_mask_is_zero_with_finite_gradients():
    depth = _depth([[5.0, INF], [NAN, 0.0]])  # nothing nearer than 2 m
    outputs = _outputs((1, 1, 2, 2), requires_grad=True)
    losses = metric_solver_loss(outputs, depth, torch.tensor([2.0]), FULL)
    assert losses['loss_sn'].item() == 0.0
    losses['loss'].backward()
    for name, logit in outputs.items():
        assert torch.isfinite(logit.grad).all(), name
    assert torch.count_nonzero(outputs['d_sn_logit'].grad) == 0
    # Invalid pixels get no gradient from any term.
    assert outputs['d_tf_logit'].grad[0, 0, 1].abs().sum() == 0
    assert outputs['mask_logit'].grad[0, 0, 1].abs().sum() == 0


def test_all_invalid_gives_zero_loss_and_zero_gradients():
    depth = _depth([[0.0, NAN], [-1.0, 0.0]])
    outputs = _outputs((1, 1, 2, 2), d_sn=1.0, mask=-2.0, d_tf=3.0, requires_grad=True)
    losses = metric_solver_loss(outputs, depth, torch.tensor([2.0]), FULL)
    assert losses['loss'].item() == 0.0
    assert not torch.isnan(losses['near_fraction'])
    losses['loss'].backward()
    for logit in outputs.values():
        assert torch.equal(logit.grad, torch.zeros_like(logit.grad))


def test_sky_far_target_is_zero():
    depth = _depth([[INF]])
    good = metric_solver_loss(_outputs((1, 1, 1, 1), mask=-30.0, d_tf=-30.0), depth,
                              torch.tensor([80.0]), FULL)
    bad = metric_solver_loss(_outputs((1, 1, 1, 1), mask=30.0, d_tf=30.0), depth,
                             torch.tensor([80.0]), FULL)
    assert good['loss'].item() < 1e-12
    assert bad['loss_tf'].item() == pytest.approx(1.0, abs=1e-6)
    assert bad['loss_mask'].item() == pytest.approx(30.0, rel=1e-6)  # BCE from the logit
    assert math.isfinite(bad['loss'].item())


def test_bf16_logits_are_scored_in_float32():
    depth = _depth([[100.0]])  # d_tf target exp(-0.025 * 20) = 0.6065...
    logit = math.log(0.6 / 0.4)
    out32 = _outputs((1, 1, 1, 1), d_tf=logit)
    out16 = {k: v.to(torch.bfloat16) for k, v in out32.items()}
    loss32 = metric_solver_loss(out32, depth, torch.tensor([80.0]), FULL)['loss_tf']
    loss16 = metric_solver_loss(out16, depth, torch.tensor([80.0]), FULL)['loss_tf']
    assert loss16.dtype == torch.float32
    assert loss32.item() == pytest.approx((0.6 - math.exp(-0.5)) ** 2, rel=1e-3)
    assert loss16.item() == pytest.approx(loss32.item(), rel=0.2)


def test_no_mask_head_drops_bce_and_truncates_near_target():
    depth = _depth([[1.0, 4.0], [INF, NAN]])
    outputs = _outputs((1, 1, 2, 2), config=NO_MASK)
    assert 'mask_logit' not in outputs
    losses = metric_solver_loss(outputs, depth, torch.tensor([2.0]), NO_MASK)
    assert losses['loss_mask'].item() == 0.0
    # Near over all 3 valid pixels, targets 0.5, min(4, 2) / 2 = 1, sky -> 1.
    sn = ((0.5 - 0.5) ** 2 + (0.5 - 1.0) ** 2 + (0.5 - 1.0) ** 2) / 3
    tf = ((0.5 - math.exp(-K * 2.0)) ** 2 + 0.5 ** 2) / 2
    assert losses['loss_sn'].item() == pytest.approx(sn, rel=1e-6)
    assert losses['loss_tf'].item() == pytest.approx(tf, rel=1e-6)
    assert losses['loss'].item() == pytest.approx(sn + tf, rel=1e-6)


def test_one_head_hard_cap():
    depth = _depth([[40.0, 120.0], [INF, 0.0]])
    outputs = _outputs((1, 1, 2, 2), config=ONE_HEAD)
    assert 'd_tf_logit' not in outputs
    losses = metric_solver_loss(outputs, depth, torch.tensor([80.0]), ONE_HEAD)
    # Targets 40 / 80 = 0.5, min(120, 80) / 80 = 1, sky -> 1; invalid excluded.
    sn = (0.0 + 0.25 + 0.25) / 3
    assert losses['loss_sn'].item() == pytest.approx(sn, rel=1e-6)
    assert losses['loss_tf'].item() == 0.0
    assert losses['loss_mask'].item() == pytest.approx(LN2, rel=1e-6)  # the mask head remains
    no_heads = get_config('tiny', far_head=False, mask_head=False)
    bare = metric_solver_loss(_outputs((1, 1, 2, 2), config=no_heads), depth,
                              torch.tensor([80.0]), no_heads)
    assert bare['loss'].item() == pytest.approx(sn, rel=1e-6)


def test_gt_is_resized_by_nearest_neighbour_without_smearing():
    # 4x4 GT with a near/sky edge, NaN holes; output 2x2.
    gt = _depth([[1.0, 1.0, INF, INF],
                 [1.0, 1.0, INF, INF],
                 [3.0, 3.0, NAN, NAN],
                 [3.0, 3.0, NAN, NAN]])
    small = resize_depth_nearest(gt, (2, 2))
    assert small.shape == (1, 1, 2, 2)
    assert small[0, 0, 0, 0] == 1.0 and small[0, 0, 0, 1] == INF
    assert small[0, 0, 1, 0] == 3.0 and torch.isnan(small[0, 0, 1, 1])
    # The loss at output resolution equals the loss against the resized GT.
    outputs = _outputs((1, 1, 2, 2), d_sn=LOGIT_075, mask=1.0, d_tf=-1.0)
    a = torch.tensor([2.0])
    full = metric_solver_loss(outputs, gt, a, FULL)
    resized = metric_solver_loss(outputs, small, a, FULL)
    for key in ('loss', 'loss_sn', 'loss_tf', 'loss_mask'):
        assert full[key].item() == resized[key].item()
    # Odd ratios keep only input values too (no interpolation).
    rng = torch.Generator().manual_seed(0)
    gt_rand = torch.rand(2, 1, 15, 21, generator=rng) * 10
    gt_rand[:, :, ::3] = INF
    out = resize_depth_nearest(gt_rand, (8, 12))
    assert set(out.flatten().tolist()) <= set(gt_rand.flatten().tolist())


def test_masked_mean_and_argument_checks():
    values = torch.tensor([1.0, 2.0, 6.0, NAN])
    mask = torch.tensor([True, False, True, False])
    assert masked_mean(values, mask).item() == pytest.approx(3.5)
    assert masked_mean(values, torch.zeros(4, dtype=torch.bool)).item() == 0.0
    outputs = _outputs((2, 1, 1, 1))
    with pytest.raises(ValueError, match='anchors'):
        metric_solver_loss(outputs, torch.ones(2, 1, 1, 1), torch.tensor([1.0, 2.0, 3.0]), FULL)
    with pytest.raises(ValueError, match='batch'):
        metric_solver_loss(outputs, torch.ones(3, 1, 1, 1), torch.tensor([1.0, 2.0]), FULL)


def test_silog_term_by_hand_and_off_by_default():
    # Mask logit 50 (m = 1): the fused depth is the near one, sigmoid(0) * 4 m = 2 m everywhere.
    # GT: 2 m and 4 m count; sky, a horizon 1000 km away (beyond the representation's reach,
    # 4 + ln(1e6) / 0.025 = 557 m), 0 and NaN do not. e = (0, ln 0.5).
    depth = _depth([[2.0, 4.0, INF], [1.0e6, 0.0, NAN]])
    outputs = _outputs((1, 1, 2, 3), d_sn=0.0, mask=50.0, d_tf=0.0, requires_grad=True)
    plain = metric_solver_loss(outputs, depth, torch.tensor([4.0]), FULL)
    assert plain['loss_silog'].item() == 0.0  # the paper's loss: no SILog unless weighted
    with_silog = metric_solver_loss(outputs, depth, torch.tensor([4.0]), FULL,
                                    LossWeights(silog=0.5))
    e = [0.0, math.log(0.5)]
    mean_e, mean_e2 = sum(e) / 2, sum(x * x for x in e) / 2
    silog = mean_e2 - 0.85 * mean_e ** 2
    assert with_silog['loss_silog'].item() == pytest.approx(silog, rel=1e-5)
    assert with_silog['loss'].item() == pytest.approx(plain['loss'].item() + 0.5 * silog,
                                                      rel=1e-5)
    with_silog['loss'].backward()
    assert torch.isfinite(outputs['d_sn_logit'].grad).all()
    assert outputs['d_sn_logit'].grad.abs().sum() > 0


def test_silog_term_averages_images_and_needs_the_fused_depth():
    from metric_solver_ros.losses import silog_loss

    # Image 0 exactly right; image 1 uniformly 2x too far (scale only: (1 - 0.85) ln(2)^2);
    # image 2 has no valid pixel and does not count.
    gt = torch.tensor([1.0, 3.0, 1.0, 3.0, 5.0, 5.0]).reshape(3, 1, 1, 2)
    pred = torch.tensor([1.0, 3.0, 2.0, 6.0, 1.0, 1.0]).reshape(3, 1, 1, 2)
    valid = torch.tensor([True, True, True, True, False, False]).reshape(3, 1, 1, 2)
    assert silog_loss(pred, gt, valid).item() == pytest.approx(0.15 * LN2 ** 2 / 2, rel=1e-5)
    # mask logit -50 (m = 0): the far depth a - ln(d_tf) / k, d_tf = 0.5
    far = soft_fused_depth(_outputs((1, 1, 1, 1), mask=-50.0), torch.tensor([10.0]), FULL)
    assert far.item() == pytest.approx(10.0 + LN2 / K, rel=1e-6)
    # a d_tf below the representation's epsilon stays finite: a + ln(1 / eps) / k
    sky = soft_fused_depth(_outputs((1, 1, 1, 1), mask=-50.0, d_tf=-60.0), torch.tensor([10.0]),
                           FULL)
    assert sky.item() == pytest.approx(10.0 - math.log(FULL.d_tf_eps) / K, rel=1e-5)
    with pytest.raises(ValueError, match='mask and far heads'):
        metric_solver_loss(_outputs((1, 1, 1, 1), config=ONE_HEAD), _depth([[1.0]]),
                           torch.tensor([2.0]), ONE_HEAD, LossWeights(silog=0.1))


def test_consistency_term_by_hand_and_its_pairing_check():
    depth = _depth([[1.0, 5.0], [INF, 0.0]])  # two finite valid pixels, sky, invalid
    anchors = torch.tensor([2.0, 20.0])  # the one image at 2 m, then at 20 m
    outputs = _outputs((2, 1, 2, 2), d_sn=0.0, mask=0.0, d_tf=0.0)
    # the same logits at both anchors: soft depths differ by the anchor scaling
    fused = soft_fused_depth(outputs, anchors, FULL)
    e = torch.log(fused[0]) - torch.log(fused[1])
    expected = float((e[0, 0, :2] ** 2).mean())  # only the finite valid pixels are trusted
    terms = metric_solver_loss(outputs, depth, anchors, FULL, LossWeights(consistency=1.0))
    assert terms['loss_consistency'].item() == pytest.approx(expected, rel=1e-5)
    agree = consistency_loss(_outputs((2, 1, 2, 2), d_sn=1.0, mask=5.0, d_tf=1.0),
                             torch.tensor([4.0, 4.0]), depth.repeat(2, 1, 1, 1), FULL)
    assert agree.item() == 0.0
    with pytest.raises(ValueError, match='two anchors'):
        metric_solver_loss(_outputs((1, 1, 2, 2)), depth, torch.tensor([2.0]), FULL,
                           LossWeights(consistency=1.0))
    assert metric_solver_loss(_outputs((1, 1, 2, 2)), depth, torch.tensor([2.0]),
                              FULL)['loss_consistency'] == 0.0


def test_censored_depths_are_far_bounds_below_the_cap_and_unknown_above():
    # label_cap 10 m; pixels: 3 m (a measurement) and 12 m (>= the cap: "at least 10 m").
    depth = _depth([[3.0, 12.0]])
    outputs = _outputs((1, 1, 1, 2))  # every sigmoid = 0.5
    # Anchor 2 (below the cap): both far; the censored pixel's far term is one-sided against
    # exp(-k (10 - 2)) and its mask target is far, like the measured one's.
    low = metric_solver_loss(outputs, depth, torch.tensor([2.0]), FULL, label_cap_m=10.0)
    bound = math.exp(-K * 8.0)
    assert low['loss_tf'].item() == pytest.approx(
        ((0.5 - math.exp(-K * 1.0)) ** 2 + max(0.5 - bound, 0.0) ** 2) / 2, rel=1e-6)
    assert low['loss_mask'].item() == pytest.approx(LN2, rel=1e-6)
    assert low['loss_sn'].item() == 0.0
    # A far prediction beyond the bound costs nothing: d_tf = sigmoid(-5) < bound.
    beyond = metric_solver_loss(_outputs((1, 1, 1, 2), d_tf=-5.0), _depth([[12.0, 12.0]]),
                                torch.tensor([2.0]), FULL, label_cap_m=10.0)
    assert beyond['loss_tf'].item() == 0.0
    # Anchor 20 (above the cap): the censored pixel is in no term; 3 m is near.
    high = metric_solver_loss(outputs, depth, torch.tensor([20.0]), FULL, label_cap_m=10.0)
    assert high['loss_sn'].item() == pytest.approx((0.5 - 3.0 / 20.0) ** 2, rel=1e-6)
    assert high['loss_tf'].item() == 0.0 and high['near_fraction'].item() == 0.5
    # Without a cap the 12 m pixel is a measurement: near at anchor 20.
    plain = metric_solver_loss(outputs, depth, torch.tensor([20.0]), FULL)
    assert plain['loss_sn'].item() == pytest.approx(
        ((0.5 - 0.15) ** 2 + (0.5 - 0.6) ** 2) / 2, rel=1e-6)
    # The capped-target ablation: a censored pixel is "1" only for anchors up to the cap.
    for anchor, expected in ((5.0, ((0.5 - 0.6) ** 2 + 0.25) / 2), (20.0, (0.5 - 0.15) ** 2)):
        capped = metric_solver_loss(_outputs((1, 1, 1, 2), config=ONE_HEAD), depth,
                                    torch.tensor([anchor]), ONE_HEAD, label_cap_m=10.0)
        assert capped['loss_sn'].item() == pytest.approx(expected, rel=1e-6), anchor
