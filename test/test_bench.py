"""`metric-solver bench` runs on CPU and reports every documented key."""

import json

import torch
from node_harness import small_checkpoint

from metric_solver_ros.cli import main

KEYS = ('preprocess_ms', 'encoder_ms', 'single_ms', 'batched4_ms', 'sequential4_ms',
        'redecode_ms', 'fps', 'peak_mem_mb', 'device', 'precision', 'preset', 'input_size',
        'decoder1_ms', 'decoder4_ms', 'fusion_ms', 'batched4_over_single',
        'sequential4_over_batched4', 'redecode_over_single')


def test_bench_json_has_the_documented_keys(tmp_path, capsys):
    checkpoint = small_checkpoint(tmp_path / 'small.safetensors')
    code = main(['bench', '--checkpoint', str(checkpoint), '--device', 'cpu', '--width', '96',
                 '--height', '72', '--warmup', '1', '--iters', '2', '--json'])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in KEYS:
        assert key in result, key
    assert result['device'] == 'cpu' and result['precision'] == 'float32'
    assert result['input_size'] == [56, 70] and result['image_size'] == [72, 96]
    assert result['anchors4'] == [2.0, 10.0, 40.0, 80.0]
    # fps is computed from the unrounded time; single_ms is printed rounded to 1 µs
    assert result['single_ms'] > 0
    fps = 1000 / result['single_ms']
    assert abs(result['fps'] - fps) <= 0.01 + fps * 1e-3


def test_bench_table(tmp_path, capsys):
    checkpoint = small_checkpoint(tmp_path / 'small.safetensors')
    assert main(['bench', '--checkpoint', str(checkpoint), '--device', 'auto', '--width', '64',
                 '--height', '48', '--warmup', '0', '--iters', '1']) == 0
    out, err = capsys.readouterr()
    assert 'frame, 4 anchors batched' in out and 'batched-4 / single' in out
    if not torch.cuda.is_available():  # the engine's own log line, on stderr
        assert 'metric-solver: device auto: CUDA is not available, using the CPU' in err
