"""Multi-anchor fusion rules (model.fusion) on constructed decoded maps: exact values."""

from __future__ import annotations

import math

import pytest
import torch

from metric_solver_ros.model import get_config
from metric_solver_ros.model.fusion import FUSION_RULES, fuse_decoded

CONFIG = get_config('tiny')
ANCHORS = torch.tensor([2.0, 10.0, 40.0])


def _decoded(near_prob, depth_near_m, depth_far_m):
    """Decoded maps of 3 anchors x 2 pixels (``[A, 1, 1, 2]``), as ``representation.decode``."""
    p = torch.tensor(near_prob).reshape(3, 1, 1, 2)
    near_m = torch.tensor(depth_near_m).reshape(3, 1, 1, 2)
    far_m = torch.tensor(depth_far_m).reshape(3, 1, 1, 2)
    near = p >= 0.5
    return {'near_prob': p, 'near': near, 'depth_near_m': near_m, 'depth_far_m': far_m,
            'depth_m': torch.where(near, near_m, far_m)}


DECODED = _decoded(
    near_prob=[[0.9, 0.1], [0.8, 0.2], [0.6, 0.3]],
    depth_near_m=[[1.0, 1.9], [2.0, 9.0], [4.0, 30.0]],
    depth_far_m=[[3.0, 50.0], [12.0, 60.0], [45.0, math.inf]])


def test_finest_takes_the_smallest_covering_anchor_else_the_largest_far():
    depth = fuse_decoded(DECODED, ANCHORS, CONFIG, 'finest').flatten().tolist()
    assert depth == [1.0, math.inf]


def test_covering_averages_the_near_depths_of_the_anchors_that_say_near():
    depth = fuse_decoded(DECODED, ANCHORS, CONFIG, 'covering').flatten()
    expected = math.exp((0.9 * math.log(1.0) + 0.8 * math.log(2.0) + 0.6 * math.log(4.0)) / 2.3)
    assert depth[0].item() == pytest.approx(expected, rel=1e-6)
    assert depth[1].item() == math.inf  # nobody says near: the largest anchor's far depth


def test_soft_weights_both_branches_by_their_probability_and_keeps_the_sky():
    depth = fuse_decoded(DECODED, ANCHORS, CONFIG, 'soft').flatten()
    logs = [(0.9, 1.0), (0.8, 2.0), (0.6, 4.0), (0.1, 3.0), (0.2, 12.0), (0.4, 45.0)]
    expected = math.exp(sum(w * math.log(d) for w, d in logs) / sum(w for w, _ in logs))
    assert depth[0].item() == pytest.approx(expected, rel=1e-6)
    assert depth[1].item() == math.inf  # the largest anchor says far and +inf


def test_soft_gives_no_weight_to_an_infinite_far_branch_of_a_smaller_anchor():
    decoded = _decoded(near_prob=[[0.2, 0.2], [0.3, 0.3], [0.9, 0.9]],
                       depth_near_m=[[2.0, 2.0], [8.0, 8.0], [20.0, 20.0]],
                       depth_far_m=[[math.inf, math.inf], [30.0, 30.0], [50.0, 50.0]])
    depth = fuse_decoded(decoded, ANCHORS, CONFIG, 'soft').flatten()
    assert torch.isfinite(depth).all()


def test_median_is_the_middle_anchor_or_the_geometric_mean_of_the_two_middle():
    assert fuse_decoded(DECODED, ANCHORS, CONFIG, 'median').flatten()[0].item() == 2.0
    two = {k: v[:2] for k, v in DECODED.items()}
    assert fuse_decoded(two, ANCHORS[:2], CONFIG, 'median').flatten()[0].item() == \
        pytest.approx(math.sqrt(2.0))


@pytest.mark.parametrize('rule', FUSION_RULES)
def test_one_anchor_is_its_own_depth(rule):
    one = {k: v[1:2] for k, v in DECODED.items()}
    depth = fuse_decoded(one, ANCHORS[1:2], CONFIG, rule).flatten().tolist()
    assert depth == one['depth_m'].flatten().tolist()


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match='not one of'):
        fuse_decoded(DECODED, ANCHORS, CONFIG, 'best')

