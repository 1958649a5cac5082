"""The auto anchor mode scored over a sequence; filtered predictions reset on its switches."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from metric_solver_ros import evaluation
from metric_solver_ros.anchor_metrics import AnchorSwitches, score_auto_anchor
from metric_solver_ros.anchor_modes import AnchorSelector, ScaleHandover

POOL_M = (0.5, 1.0, 2.0, 4.0, 6.0, 10.0, 20.0, 40.0, 80.0, 120.0)


def test_a_switch_jump_is_measured_on_the_same_frame():
    """The scene recedes from 5 to 15 m; anchors >= 20 m see everything 10 % farther."""
    scene_m = [5, 5, 15, 15, 15, 15, 15, 15]
    calls = []

    def decode(index, anchor_m):
        calls.append((index, anchor_m))
        return np.full((4, 6), scene_m[index] * (1.1 if anchor_m >= 20 else 1.0), np.float32)

    summary = score_auto_anchor(decode, len(scene_m), AnchorSelector(POOL_M, 10.0))
    # 15 m spills out of 10 m at frame 2; after two frames of patience, frame 4 uses 20 m.
    assert summary['anchor_per_frame_m'] == [10.0] * 4 + [20.0] * 4
    assert summary['switches'] == 1 and summary['anchors_used_m'] == [10.0, 20.0]
    assert summary['median_jump'] == pytest.approx(math.log(1.1), abs=1e-6)
    assert summary['median_jump_ratio'] == pytest.approx(1.1, abs=1e-6)
    assert summary['step_at_switch'] == pytest.approx(math.log(1.1), abs=1e-6)
    assert summary['step_otherwise'] == pytest.approx(0.0)
    assert calls.count((4, 10.0)) == 1 and len(calls) == len(scene_m) + 1  # one extra decode


def test_the_scale_handover_removes_the_jump_and_fades_to_the_new_anchor():
    scene_m = [5, 5, 15, 15] + [15] * 20

    def decode(index, anchor_m):
        return np.full((4, 6), scene_m[index] * (1.1 if anchor_m >= 20 else 1.0), np.float32)

    summary = score_auto_anchor(decode, len(scene_m), AnchorSelector(POOL_M, 10.0),
                                ScaleHandover(frames=10))
    assert summary['switches'] == 1
    assert summary['median_jump'] == pytest.approx(0.0, abs=1e-6)  # published: no jump
    assert summary['median_raw_jump'] == pytest.approx(math.log(1.1), abs=1e-6)
    assert summary['step_at_switch'] == pytest.approx(0.0, abs=1e-6)
    # the correction fades in ten equal steps of ln(1.1) / 10: no step larger than that
    assert summary['step_otherwise'] <= math.log(1.1) / 10 + 1e-6


def test_no_switch_no_jump():
    switches = AnchorSwitches()
    for _ in range(3):
        switches.add(10.0, np.full((2, 2), 4.0))
    summary = switches.summary()
    assert summary['switches'] == 0 and summary['median_jump'] is None
    assert summary['step_otherwise'] == 0.0 and summary['step_at_switch'] is None
    switches.add(20.0, np.full((2, 2), np.nan), np.full((2, 2), 4.0))  # nothing finite: no jump
    assert switches.summary()['switches'] == 1 and switches.summary()['median_jump'] is None


def test_filtered_predictor_resets_when_the_decoded_anchor_changes():
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 9, (6, 8)).astype(np.float32)
    anchors = [10.0, 10.0, 10.0, 20.0, 20.0]
    frames = [evaluation.EvalFrame(i, np.zeros((6, 8, 3), np.uint8), base) for i in range(5)]
    depths = [base * np.float32(s) for s in (1.0, 1.08, 0.95, 1.2, 1.1)]

    def predictor(frame):
        return {'auto': evaluation.Prediction(depths[frame.index],
                                              decoded_m=(anchors[frame.index],)),
                'fixed': evaluation.Prediction(depths[frame.index], None, 10.0)}

    filtered = evaluation.FilteredPredictor(predictor, 'scale')
    outs = [filtered(frame) for frame in frames]
    assert filtered.filters['auto'].last_reset == 'anchor'
    np.testing.assert_array_equal(outs[3]['auto'].depth_m, depths[3])  # a new history
    assert not np.allclose(outs[3]['fixed'].depth_m, depths[3])  # smoothed
    assert outs[3]['fixed'].anchor_m == 10.0  # masks and anchors pass through
    with pytest.raises(ValueError, match='mode'):
        evaluation.FilteredPredictor(predictor, 'strong')


def test_eval_auto_anchor_end_to_end(tmp_path):
    from metric_solver_ros.checkpoint import save_checkpoint
    from metric_solver_ros.commands import eval as eval_command
    from metric_solver_ros.commands import make_bag
    from metric_solver_ros.model import create_model
    from metric_solver_ros.model.config import MetricSolverConfig

    pytest.importorskip('torch').manual_seed(0)
    save_checkpoint(tmp_path / 'micro.safetensors', create_model(MetricSolverConfig(
        embed_dim=48, depth=4, num_heads=2, head_features=8, head_out_channels=(8, 8, 8, 8),
        head_hidden=8, anchor_dim=8, input_size=(28, 28))))

    def run(module, argv):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        return module.run(parser.parse_args(argv))

    assert run(make_bag, ['--out', str(tmp_path / 'bag'), '--synthetic-sequence', 'outdoor',
                          '--motion', 'forward', '--frames', '4', '--size', '12', '16']) == 0
    assert run(eval_command, [
        '--bag', str(tmp_path / 'bag'), '--checkpoint', str(tmp_path / 'micro.safetensors'),
        '--device', 'cpu', '--anchors', '10', '--auto-anchor', '2', '--cap', '80',
        '--examples', '0', '--temporal-filter', 'scale', '--out', str(tmp_path / 'out')]) == 0
    data = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert list(data['results']) == ['anchor=10', 'auto']
    switches = data['anchor_switches']
    assert switches['frames'] == 4 and switches['anchor_per_frame_m'][0] == 2.0
    assert set(data['temporal']) == {'anchor=10', 'auto'}
    assert '## Auto anchor switches' in (tmp_path / 'out' / 'report.md').read_text()
