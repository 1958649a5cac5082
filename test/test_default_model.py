"""The bundled default model: present, small, self-describing, and it does its job.

Quality is checked on the synthetic world it was trained on (held-out scenes, never training
seeds): it is a demo model, not a real-world one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metric_solver_ros.checkpoint import (
    default_model_path,
    load_checkpoint,
    read_checkpoint_metadata,
)
from metric_solver_ros.data.synthetic import render_scene
from metric_solver_ros.engine import DepthEngine
from metric_solver_ros.metrics import compute_metrics

HELD_OUT_SEED = 555_000_000  # far from every training / evaluation seed range


@pytest.fixture(scope='module')
def engine():
    torch.manual_seed(0)
    return DepthEngine.from_checkpoint(None, device='cpu')


def test_bundled_file_is_small_and_self_describing():
    path = default_model_path()
    assert path.is_file(), f'{path} is missing: run tools/bundle_default_model.py'
    assert path.stat().st_size <= 40 * 2**20
    model = load_checkpoint(path)
    assert model.config.preset == 'tiny'
    metadata = read_checkpoint_metadata(path)
    assert 'synthetic' in metadata['note'] and int(metadata['train_step']) > 0


def test_recorded_evaluation_is_what_the_model_scores():
    # The metadata's eval_metrics are what README / docs/TRAINING.md quote: re-measure them
    # with the protocol the metadata names (64 held-out scenes per kind at 196x252).
    from contextlib import nullcontext

    from metric_solver_ros.train import evaluate
    from metric_solver_ros.train_config import TrainConfig
    from metric_solver_ros.train_data import eval_frames

    metadata = read_checkpoint_metadata(default_model_path())
    assert '64 held-out scenes per kind' in metadata['eval_protocol']
    assert '196x252' in metadata['eval_protocol']
    recorded = json.loads(metadata['eval_metrics'])
    frames = eval_frames(TrainConfig(image_size=(196, 252), eval_frames=64), torch.device('cpu'))
    model = load_checkpoint(default_model_path()).float()
    measured = evaluate(model, frames, torch.device('cpu'), nullcontext(), batch_size=16)
    for kind in ('indoor', 'outdoor'):
        for key in ('delta1', 'abs_rel', 'delta1_aligned', 'mask_accuracy'):
            assert measured[kind][key] == pytest.approx(recorded[kind][key], abs=2e-3), (kind, key)
    assert measured['outdoor']['sky_far_fraction'] == pytest.approx(
        recorded['outdoor']['sky_far_fraction'], abs=2e-3)


#: Median depth of the synthetic world per kind [m] (docs/DATA.md): the best constant guess.
MEDIAN_DEPTH_M = {'indoor': 2.33, 'outdoor': 6.43}


@pytest.mark.parametrize('kind, anchors_m, cap_m', [
    ('indoor', [10.0], 10.0),
    ('indoor', [1.0, 2.0, 4.0, 10.0], 10.0),
    ('outdoor', [80.0], 80.0),
    ('outdoor', [10.0, 20.0, 40.0, 80.0], 80.0),
])
def test_metric_depth_beats_the_best_constant_on_held_out_scenes(engine, kind, anchors_m, cap_m):
    """A demo model, but a trained one: it must beat the world's median depth as a guess."""
    model, constant = [], []
    for i in range(6):
        scene = render_scene(kind, HELD_OUT_SEED + i, 196, 252)
        depth = engine.infer(scene.image, anchors_m).depth_m
        model.append(compute_metrics(depth, scene.depth_m, cap_m=cap_m))
        guess = np.full_like(scene.depth_m, MEDIAN_DEPTH_M[kind])
        constant.append(compute_metrics(guess, scene.depth_m, cap_m=cap_m))
    for key, better in (('abs_rel', np.less), ('delta1', np.greater)):
        ours = np.mean([m[key] for m in model])
        baseline = np.mean([m[key] for m in constant])
        assert better(ours, baseline), (key, ours, baseline)


def test_sky_is_beyond_the_outdoor_range(engine):
    right = total = 0
    for i in range(4):
        scene = render_scene('outdoor', HELD_OUT_SEED + 100 + i, 240, 320)
        sky = np.isposinf(scene.depth_m)
        depth = engine.infer(scene.image, 80.0).depth_m
        right += int(np.count_nonzero(depth[sky] > 80.0))
        total += int(np.count_nonzero(sky))
    assert total > 0 and right / total > 0.5
