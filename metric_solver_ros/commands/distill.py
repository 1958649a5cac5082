r"""``metric-solver distill``: a Metric-Solver student taught by a metric teacher, no GT needed.

Examples::

    metric-solver weights get depth_anything_v2_metric_hypersim_vits
    metric-solver distill --teacher dav2-metric:depth_anything_v2_metric_hypersim_vits \
        --images my_frames/ --preset vits --init-from-teacher --steps 20000 --batch-size 16 \
        --out vits_student.safetensors --report vits_student.json
    metric-solver distill --teacher metric-solver:vitl_student.safetensors \
        --bag my_bag --image-topic /camera/color/image_raw --every 5 \
        --preset vits --steps 20000 --out vits_from_vitl.safetensors

Several GPUs: ``torchrun --standalone --nproc_per_node=N -m metric_solver_ros.distill`` with the
same options. See ``metric_solver_ros.distill`` and docs/DISTILL.md.
"""

from __future__ import annotations

import argparse

# torch-free: `metric-solver --help` lists the options without loading torch
from metric_solver_ros.distill import add_arguments as _add_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver distill`` (``distill.add_arguments``)."""
    _add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Distil (``distill.run``)."""
    from metric_solver_ros import distill

    return distill.run(args)
