r"""``metric-solver train``: train or fine-tune Metric-Solver (``metric_solver_ros.train``).

Examples::

    metric-solver train --config config/train_default.yaml
    metric-solver train --config config/train_smoke.yaml --max_steps 50 --out_dir out/smoke
    metric-solver train --config config/train_gpu.yaml --init_from dinov2_vitb14_pretrain.pth \
        --preset vitb --model '{input_size: [518, 518]}'

Every field of ``metric_solver_ros.train_config.TrainConfig`` is an option ``--<field> VALUE``;
the value is parsed as YAML (numbers, booleans, ``[196, 252]``, ``{embed_dim: 96}``) and
overrides the config file. For several GPUs run ``torchrun --nproc_per_node=N -m
metric_solver_ros.train`` with the same options (docs/TRAINING.md).
"""

from __future__ import annotations

import argparse

# torch-free: `metric-solver --help` lists the options without loading torch
from metric_solver_ros.train_config import add_config_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config`` and one ``--<field>`` option per ``TrainConfig`` field."""
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load the config, apply the overrides and train."""
    from metric_solver_ros import train

    return train.run(args)
