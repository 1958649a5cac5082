r"""``metric-solver train``: train or fine-tune Metric-Solver (``metric_solver_ros.train``).

Examples::

    metric-solver train --config config/train_default.yaml
    metric-solver train --config config/train_smoke.yaml --max_steps 50 --out_dir out/smoke
    metric-solver train --config config/train_gpu.yaml --init_from dinov2_vitb14_pretrain.pth \
        --preset vitb --model '{input_size: [518, 518]}'

Every field of ``metric_solver_ros.train.TrainConfig`` is an option ``--<field> VALUE``; the
value is parsed as YAML (numbers, booleans, ``[196, 252]``, ``{embed_dim: 96}``) and overrides
the config file. For several GPUs run ``torchrun --nproc_per_node=N -m metric_solver_ros.train``
with the same options (docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import re

_TRAIN_SOURCE = pathlib.Path(__file__).resolve().parent.parent / 'train.py'


def config_fields() -> list[tuple[str, str]]:
    """``(name, help)`` of every ``TrainConfig`` field, read from ``train.py``'s source.

    Parsing the source instead of importing the module keeps ``metric-solver --help`` free of
    the torch import; the help text is the field's entry in the class docstring.
    """
    tree = ast.parse(_TRAIN_SOURCE.read_text())
    cls = next(node for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name == 'TrainConfig')
    helps: dict[str, str] = {}
    current = None
    for line in (ast.get_docstring(cls) or '').split('Attributes:', 1)[-1].splitlines():
        match = re.match(r'^    (\w+): (.*)$', line)
        if match:
            current = match.group(1)
            helps[current] = match.group(2).strip()
        elif current and line.startswith('        '):
            helps[current] += ' ' + line.strip()
    return [(node.target.id, helps.get(node.target.id, ''))
            for node in cls.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config`` and one ``--<field>`` option per ``TrainConfig`` field."""
    parser.add_argument('--config', type=pathlib.Path, default=None,
                        help='YAML file of TrainConfig fields (e.g. config/train_default.yaml)')
    group = parser.add_argument_group('config overrides (values parsed as YAML)')
    for name, help_text in config_fields():
        group.add_argument(f'--{name}', dest=f'override_{name}', default=None, metavar='VALUE',
                           help=help_text.replace('%', '%%'))


def overrides_from_args(args: argparse.Namespace) -> dict:
    """Return ``{field: YAML-parsed value}`` of the overrides given on the command line."""
    import yaml

    overrides = {}
    for key, value in vars(args).items():
        if key.startswith('override_') and value is not None:
            try:
                overrides[key[len('override_'):]] = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ValueError(f'--{key[len("override_"):]}: not a YAML value: {exc}') from None
    return overrides


def run(args: argparse.Namespace) -> int:
    """Load the config, apply the overrides and train."""
    from metric_solver_ros.train import load_config, train

    if args.config is not None and not args.config.is_file():
        raise FileNotFoundError(f'{args.config}: no such config file')
    summary = train(load_config(args.config, overrides_from_args(args)))
    print(f'finished at step {summary["step"]} ({summary["stopped_by"]}); outputs in '
          f'{summary["out_dir"]}')
    return 0
