"""Import structure: what loads without torch, and no module outside commands/ imports them."""

from __future__ import annotations

import subprocess
import sys

# `sys.modules[name] = None` makes every later `import name` raise ImportError.
BLOCK_TORCH = 'import sys\nsys.modules["torch"] = None\n'


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout (fail on a non-zero exit)."""
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_train_config_and_runtime_options_import_without_torch():
    out = _python(BLOCK_TORCH + '''
import types
from metric_solver_ros import parameters  # the node's table: option names, no engine
from metric_solver_ros.runtime_options import DEVICES, PRECISIONS, RESIZE_MODES, native_bf16
from metric_solver_ros.train_config import TrainConfig, config_fields, get_lr, load_config

cfg = load_config(None, {'lr': '3e-4', 'max_steps': 10, 'warmup_steps': 0})
assert isinstance(cfg, TrainConfig) and cfg.lr == 3e-4
assert get_lr(10, cfg) == cfg.min_lr
assert [name for name, _ in config_fields()][:2] == ['out_dir', 'resume']
assert 'cpu' in DEVICES and 'bf16' in PRECISIONS and 'square' in RESIZE_MODES
assert parameters.PARAMETERS
assert native_bf16(types.SimpleNamespace(type='cpu')) is False  # no torch needed to say no
try:  # the block works: the engine does need torch
    import metric_solver_ros.engine
except ImportError:
    print('blocked')
''')
    assert out.strip() == 'blocked'


def test_bag_ground_truth_reads_without_torch():
    out = _python(BLOCK_TORCH + '''
from metric_solver_ros.cli import build_parser
from metric_solver_ros.data.rosbag import BagRGBD
from metric_solver_ros.lidar import project_to_depth
from metric_solver_ros.bagtf import PoseLookup

args = build_parser().parse_args(['finetune', '--bag', 'b', '--image-topic', 'i',
                                  '--camera-info-topic', 'c', '--lidar-topic', 'l',
                                  '--steps', '0', '--out', 'o.safetensors'])
print(args.lidar_topic)
''')
    assert out.strip() == 'l'


def test_train_help_lists_every_config_field_with_its_help_without_torch():
    out = _python(BLOCK_TORCH + '''
import contextlib, io
from metric_solver_ros.cli import build_parser

text = io.StringIO()
with contextlib.redirect_stdout(text):
    try:
        build_parser().parse_args(['train', '--help'])
    except SystemExit:
        pass
print(text.getvalue())
''')
    from metric_solver_ros.train_config import config_fields

    fields = config_fields()
    assert len(fields) > 30
    flat = ''.join(out.split())  # argparse re-wraps the text: compare without whitespace
    for name, help_text in fields:
        assert f'--{name} VALUE' in out, name
        assert help_text and ''.join(help_text.split()) in flat, name


def test_no_module_outside_commands_imports_them():
    out = _python('''
import sys
import metric_solver_ros.checkpoint, metric_solver_ros.engine, metric_solver_ros.evaluation
import metric_solver_ros.losses, metric_solver_ros.parameters, metric_solver_ros.train
import metric_solver_ros.train_config, metric_solver_ros.train_data, metric_solver_ros.train_state
print(sorted(name for name in sys.modules if name.startswith('metric_solver_ros.commands')))
''')
    assert out.strip() == '[]'
