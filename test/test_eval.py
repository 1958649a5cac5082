"""The evaluation pipeline end to end on real bags: pairing, metrics, JSON / CSV / report."""

from __future__ import annotations

import argparse
import csv
import json
import re

import numpy as np
import pytest

from metric_solver_ros import bagio, eval_report, evaluation
from metric_solver_ros.commands import eval as eval_command
from metric_solver_ros.conversions import camera_info_to_intrinsics
from metric_solver_ros.data.sample import Sample

IMAGE, DEPTH = '/camera/color/image_raw', '/camera/depth/image_raw'
PRED, INFO = '/depth_pred', '/camera/color/camera_info'
T0 = 1_700_000_000_000_000_000
MS = 1_000_000
SHAPE = (12, 16)


def _gt_m(i: int) -> np.ndarray:
    """Whole-millimetre GT in 0.5..7 m (exact in 16UC1), with invalid and sky pixels."""
    rng = np.random.default_rng(i)
    gt = (rng.integers(500, 7000, SHAPE) / 1000.0).astype(np.float32)
    gt[0, :3] = np.nan
    gt[1, :2] = np.inf
    return gt


def _write_bag(path, storage='mcap', depth_encoding='32FC1', compressed=False, n=6, drop=(3,)):
    """Images every 100 ms; GT depth with +-7 ms jitter (missing for ``drop``); pred = GT x 1.1.

    Returns:
        The GT arrays of the frames that have a depth, as the evaluation will read them.
    """
    rng = np.random.default_rng(0)
    kept = []
    with bagio.BagWriter(path, storage=storage) as bag:
        for i in range(n):
            stamp = T0 + i * 100 * MS
            rgb = rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
            if compressed:
                bag.write(IMAGE + '/compressed', bagio.rgb_to_compressed_msg(rgb, stamp, 'cam'),
                          stamp)
            else:
                bag.write(IMAGE, bagio.rgb_to_image_msg(rgb, stamp, 'cam'), stamp)
            bag.write(INFO, bagio.camera_info_msg((10.0, 11.0, 8.0, 6.0), SHAPE[1], SHAPE[0],
                                                  stamp, 'cam'), stamp)
            if i in drop:
                continue
            gt = _gt_m(i)
            jitter = (7 if i % 2 else -7) * MS
            msg = bagio.depth_to_image_msg(gt, stamp + jitter, 'cam', depth_encoding)
            bag.write(DEPTH, msg, stamp + 30 * MS)
            bag.write(PRED, bagio.depth_to_image_msg(gt * np.float32(1.1), stamp - jitter, 'cam'),
                      stamp + 60 * MS)
            kept.append(gt)
    return kept


def _strict_json(path):
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f'{c} in JSON'))


def _parse(argv):
    parser = argparse.ArgumentParser()
    eval_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_anchor_names_are_compact():
    assert evaluation.anchor_name(2.0) == 'anchor=2'
    assert evaluation.anchor_name(0.5) == 'anchor=0.5'
    assert evaluation.anchor_name(120) == 'anchor=120'


def test_pipeline_with_gt_predictors_is_exact_and_writes_every_output(tmp_path):
    gts = _write_bag(tmp_path / 'bag')
    frames = evaluation.BagFrames(tmp_path / 'bag', IMAGE, DEPTH, tolerance_ns=10 * MS)
    assert len(frames) == 5 and frames.stats.messages == {IMAGE: 6, DEPTH: 5}

    def predictor(frame):
        return {'gt_x1.1': evaluation.Prediction(frame.gt_depth_m * np.float32(1.1)),
                'gt_x1.3': evaluation.Prediction(frame.gt_depth_m * 1.3)}

    result = evaluation.evaluate(frames, predictor, cap_m=10.0, examples=2, progress=False)
    assert result.frames == 5 and [e.index for e in result.examples] == [0, 4]
    paths = eval_report.write_outputs(result, tmp_path / 'out', {'bag': str(tmp_path / 'bag')})
    data = _strict_json(paths['json'])
    assert data['frames'] == 5
    assert set(data) >= {'results', 'bands', 'per_frame', 'pixel_mean', 'mask_accuracy', 'config'}
    x11, x13 = data['results']['gt_x1.1'], data['results']['gt_x1.3']
    assert x11['abs_rel'] == pytest.approx(0.1, abs=1e-6) and x11['delta1'] == 1.0
    assert data['pixel_mean']['gt_x1.1']['abs_rel'] == pytest.approx(0.1, abs=1e-6)
    assert x13['delta1'] == 0.0 and x13['delta2'] == 1.0
    assert x13['abs_rel'] == pytest.approx(0.3, abs=1e-6)
    # 12x16 px minus 3 NaN and 2 sky pixels per frame are scored.
    assert x11['n_pixels'] == 5 * (12 * 16 - 5) and x11['n_frames'] == 5
    assert [f['n_pixels'] for f in data['per_frame']['gt_x1.1']] == [187] * 5
    assert [f['stamp_ns'] for f in data['per_frame']['gt_x1.1']] == [
        T0 + i * 100 * MS for i in (0, 1, 2, 4, 5)]
    assert data['bands']['gt_x1.1']['0-2']['abs_rel'] == pytest.approx(0.1, abs=1e-6)
    total_band_px = sum(b['n_pixels'] for b in data['bands']['gt_x1.1'].values())
    assert total_band_px == x11['n_pixels']
    band_5_10 = sum(int(np.count_nonzero((gt > 5) & (gt <= 10))) for gt in gts)
    assert data['bands']['gt_x1.1']['5-10']['n_pixels'] == band_5_10 > 0
    assert data['mask_accuracy'] == {}  # no anchor results

    with paths['csv'].open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * (5 + 2)
    mean_row = next(r for r in rows if r['name'] == 'gt_x1.1' and r['frame'] == 'mean')
    assert float(mean_row['abs_rel']) == pytest.approx(0.1, abs=1e-6)
    assert [r['frame'] for r in rows if r['name'] == 'gt_x1.3'] == ['0', '1', '2', '3', '4',
                                                                     'mean', 'pixel_mean']
    report = paths['report'].read_text()
    images = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', report)
    assert {'abs_rel_vs_depth.png', 'summary.png', 'example_0000.png',
            'example_0004.png'} <= set(images)
    for name in images:
        png = (tmp_path / 'out' / name).read_bytes()
        assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 1000
    assert '| gt_x1.1 | 1.0000 |' in report


@pytest.mark.parametrize(('storage', 'encoding', 'compressed'),
                         [('mcap', '16UC1', False), ('sqlite3', '32FC1', True)])
def test_cli_pred_topic_end_to_end_without_a_model(tmp_path, capsys, storage, encoding,
                                                   compressed):
    _write_bag(tmp_path / 'bag', storage, encoding, compressed)
    image_topic = IMAGE + ('/compressed' if compressed else '')
    args = _parse(['--bag', str(tmp_path / 'bag'), '--image-topic', image_topic,
                   '--depth-topic', DEPTH, '--pred-topic', PRED, '--camera-info-topic', INFO,
                   '--cap', '10', '--tolerance-ms', '20', '--out', str(tmp_path / 'out'),
                   '--examples', '1'])
    assert eval_command.run(args) == 0
    assert 'pred_topic' in capsys.readouterr().out
    data = _strict_json(tmp_path / 'out' / 'metrics.json')
    assert list(data['results']) == ['pred_topic']  # no model results
    pred = data['results']['pred_topic']
    assert data['frames'] == 5
    assert pred['abs_rel'] == pytest.approx(0.1, abs=1e-6)
    assert pred['delta1'] == 1.0 and pred['pred_nan_fraction'] == 0.0
    assert data['config']['intrinsics'] == [10.0, 11.0, 8.0, 6.0]
    assert data['config']['pairing']['messages'] == {image_topic: 6, DEPTH: 5, PRED: 5}
    assert data['config']['pairing']['max_abs_dt_ms'] == pytest.approx(7.0)
    assert data['config']['pred_topic'] == PRED and data['config']['cap'] == 10.0
    assert (tmp_path / 'out' / 'example_0000.png').is_file()
    # --max-frames keeps the earliest frames.
    args.max_frames, args.out = 2, tmp_path / 'out2'
    eval_command.run(args)
    assert _strict_json(tmp_path / 'out2' / 'metrics.json')['frames'] == 2


def test_cli_errors_are_value_errors(tmp_path):
    _write_bag(tmp_path / 'bag', n=2, drop=())
    common = ['--bag', str(tmp_path / 'bag'), '--out', str(tmp_path / 'out'), '--pred-topic',
              PRED]
    with pytest.raises(ValueError, match='within 1 ms'):
        eval_command.run(_parse([*common, '--tolerance-ms', '1']))  # depth is 7 ms off
    with pytest.raises(ValueError, match='/nope'):
        eval_command.run(_parse([*common, '--depth-topic', '/nope']))
    with pytest.raises(ValueError, match='--min-depth'):
        eval_command.run(_parse([*common, '--cap', '0.0001']))
    with pytest.raises(ValueError, match='need 0 < --min-depth'):
        eval_command.run(_parse([*common, '--min-depth', '0']))  # log metrics undefined at 0
    with pytest.raises(ValueError, match='--pred-topic and --depth-topic are both'):
        eval_command.run(_parse([*common, '--depth-topic', PRED]))  # was: 0 frames, exit 0
    with pytest.raises(ValueError, match=f'--depth-topic {INFO} is sensor_msgs/msg/CameraInfo, '
                                         f'not Image'):
        eval_command.run(_parse([*common, '--depth-topic', INFO]))
    with pytest.raises(ValueError, match=f'--camera-info-topic {DEPTH} is sensor_msgs/msg/Image'):
        eval_command.run(_parse([*common, '--camera-info-topic', DEPTH]))
    with pytest.raises(ValueError, match='--pred-topic needs --bag'):
        eval_command.run(_parse(['--synthetic', 'indoor', '--pred-topic', PRED]))
    with pytest.raises(FileNotFoundError):
        eval_command.run(_parse(['--bag', str(tmp_path / 'missing'), '--pred-topic', PRED]))
    assert not (tmp_path / 'out').exists()


def test_low_resolution_prediction_is_resized_to_gt_and_keeps_nan():
    gt = np.full((8, 12), 4.0, np.float32)
    gt[0, 0] = np.nan
    pred = np.full((4, 6), 4.4, np.float32)
    pred[3, 5] = np.nan                       # bottom-right block of the GT grid
    pred[0, 1] = np.inf                       # becomes the cap before the linear resize
    low = evaluation.Prediction(pred, np.ones((4, 6), bool), 2.0)
    resized = evaluation.to_gt_resolution(low, gt.shape, 1e-3, 10.0)
    assert resized.depth_m.shape == gt.shape and resized.near.shape == gt.shape
    assert np.isnan(resized.depth_m[6:, 10:]).all() and np.isnan(resized.depth_m).sum() == 4
    # NaN lends no weight: its neighbours stay exact; the inf (= cap) blends near its block.
    lower = resized.depth_m[4:]
    np.testing.assert_allclose(lower[~np.isnan(lower)], 4.4, rtol=1e-6)
    assert resized.depth_m[0, 2] == pytest.approx(0.75 * 10.0 + 0.25 * 4.4)
    assert np.nanmax(resized.depth_m) <= 10.0
    frame = evaluation.EvalFrame(0, np.zeros((4, 6, 3), np.uint8), gt)
    result = evaluation.evaluate(
        [frame], lambda f: {'low': evaluation.Prediction(np.full((4, 6), 4.4, np.float32))},
        cap_m=10.0, progress=False)
    low = result.results['low'].frame_mean()
    assert low['abs_rel'] == pytest.approx(0.1, abs=1e-6) and low['n_pixels'] == 95


def _micro_model():
    """A randomly initialised Metric-Solver small enough for CPU tests (28 px input)."""
    from metric_solver_ros.model import create_model
    from metric_solver_ros.model.config import MetricSolverConfig

    return create_model(MetricSolverConfig(
        embed_dim=48, depth=4, num_heads=2, head_features=8, head_out_channels=(8, 8, 8, 8),
        head_hidden=8, anchor_dim=8, input_size=(28, 28)))


def test_engine_predictor_with_a_real_micro_engine(tmp_path):
    from metric_solver_ros.engine import DepthEngine

    torch = pytest.importorskip('torch')
    torch.manual_seed(0)
    engine = DepthEngine(_micro_model(), device='cpu')  # random weights
    rng = np.random.default_rng(3)
    samples = [Sample(rng.integers(0, 256, (*SHAPE, 3), dtype=np.uint8), _gt_m(i), None,
                      name=f's{i}') for i in range(2)]
    predictor = evaluation.EnginePredictor(engine, [2.0, 10.0], fusion=True)
    result = evaluation.evaluate(evaluation.sample_frames(samples), predictor, cap_m=10.0,
                                 examples=0, progress=False)
    assert list(result.results) == ['anchor=2', 'anchor=10', 'fusion']
    data = _strict_json(eval_report.write_outputs(result, tmp_path / 'out')['json'])
    assert set(data['mask_accuracy']) == {'anchor=2', 'anchor=10'}
    for name, values in data['results'].items():
        assert 0.0 <= values['delta1'] <= 1.0 and values['abs_rel'] >= 0.0, name
        assert values['n_frames'] == 2
    assert 0.0 <= data['mask_accuracy']['anchor=2'] <= 1.0
    assert [f['frame_name'] for f in data['per_frame']['fusion']] == ['s0', 's1']
    # Fusion of the anchors equals engine.infer on the same image (a re-decode, no new encode).
    fused = engine.infer(samples[1].image, [2.0, 10.0]).depth_m
    again = predictor(evaluation.EvalFrame(1, samples[1].image, samples[1].depth_m))
    np.testing.assert_array_equal(again['fusion'].depth_m, fused)


def test_cli_model_and_pred_topic_from_a_checkpoint(tmp_path, capsys):
    from metric_solver_ros.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / 'micro.safetensors', _micro_model())
    _write_bag(tmp_path / 'bag')
    common = ['--bag', str(tmp_path / 'bag'), '--pred-topic', PRED, '--cap', '10',
              '--checkpoint', str(tmp_path / 'micro.safetensors'), '--device', 'cpu',
              '--max-frames', '2', '--examples', '0']
    assert eval_command.run(_parse([*common, '--anchors', '2', '10', '2', '--fusion',
                                    '--out', str(tmp_path / 'out')])) == 0
    data = _strict_json(tmp_path / 'out' / 'metrics.json')
    assert list(data['results']) == ['anchor=2', 'anchor=10', 'fusion', 'pred_topic']
    assert data['frames'] == 2 and set(data['mask_accuracy']) == {'anchor=2', 'anchor=10'}
    assert data['results']['pred_topic']['abs_rel'] == pytest.approx(0.1, abs=1e-6)
    config = data['config']
    assert config['device'] == 'cpu' and config['anchors'] == [2.0, 10.0]
    assert config['checkpoint'] == str(tmp_path / 'micro.safetensors')
    assert config['precision'] == 'float32'
    assert 'anchor=10' in capsys.readouterr().out
    # Anchors outside the model's pool are refused with a ValueError (one line in the CLI).
    with pytest.raises(ValueError, match='pool'):
        eval_command.run(_parse([*common, '--anchors', '500', '--out', str(tmp_path / 'o2')]))


def _make_bag(argv):
    from metric_solver_ros.commands import make_bag

    parser = argparse.ArgumentParser()
    make_bag.add_arguments(parser)
    return make_bag.run(parser.parse_args(argv))


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_make_bag_writes_synthetic_frames_exactly(tmp_path, storage):
    from metric_solver_ros.data.synthetic import render_scene

    assert _make_bag(['--out', str(tmp_path / 'bag'), '--storage', storage, '--synthetic',
                      'outdoor', '--seed', '3', '--frames', '2', '--size', '12', '16',
                      '--rate', '5']) == 0
    frames = list(evaluation.BagFrames(tmp_path / 'bag', IMAGE, DEPTH, tolerance_ns=0))
    assert [f.stamp_ns for f in frames] == [T0, T0 + 200 * MS]
    (_, _, info), = list(bagio.read_topics(tmp_path / 'bag', [INFO]))[:1]
    for frame, seed in zip(frames, (3, 4), strict=True):
        sample = render_scene('outdoor', seed, 12, 16)
        np.testing.assert_array_equal(frame.image, sample.image)
        np.testing.assert_array_equal(frame.gt_depth_m, sample.depth_m)  # sky stays +inf
    assert np.isinf(frames[0].gt_depth_m).any()
    assert camera_info_to_intrinsics(info) == pytest.approx(render_scene('outdoor', 3, 12, 16)
                                                            .intrinsics)
    with pytest.raises(ValueError, match='exists'):
        _make_bag(['--out', str(tmp_path / 'bag'), '--synthetic', 'indoor'])


def test_make_bag_16uc1_compressed_then_eval_synthetic_and_bag(tmp_path):
    from metric_solver_ros.checkpoint import save_checkpoint

    _make_bag(['--out', str(tmp_path / 'bag'), '--synthetic', 'indoor', '--frames', '2',
               '--size', '12', '16', '--depth-encoding', '16UC1', '--compressed'])
    assert bagio.list_topics(tmp_path / 'bag')[IMAGE + '/compressed'] == \
        'sensor_msgs/msg/CompressedImage'
    save_checkpoint(tmp_path / 'micro.safetensors', _micro_model())
    model = ['--checkpoint', str(tmp_path / 'micro.safetensors'), '--device', 'cpu',
             '--anchors', '2', '--cap', '10', '--examples', '0']
    assert eval_command.run(_parse(['--bag', str(tmp_path / 'bag'), '--image-topic',
                                    IMAGE + '/compressed', *model,
                                    '--out', str(tmp_path / 'out_bag')])) == 0
    assert eval_command.run(_parse(['--synthetic', 'indoor', '--frames', '2', '--size', '12',
                                    '16', *model, '--out', str(tmp_path / 'out_syn')])) == 0
    from_bag = _strict_json(tmp_path / 'out_bag' / 'metrics.json')
    synthetic = _strict_json(tmp_path / 'out_syn' / 'metrics.json')
    assert from_bag['frames'] == synthetic['frames'] == 2
    # Same scenes, GT in whole millimetres through 16UC1: the same pixels are scored.
    assert from_bag['results']['anchor=2']['n_pixels'] == \
        synthetic['results']['anchor=2']['n_pixels'] > 0
    assert synthetic['config']['synthetic'] == 'indoor'
