"""Options shared by the commands that run the model (eval, predict): one definition."""

from __future__ import annotations

import argparse
import pathlib


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add ``--checkpoint``, ``--device``, ``--precision``, ``--flip-tta``; return the group."""
    model = parser.add_argument_group('model')
    model.add_argument('--checkpoint', type=pathlib.Path, default=None,
                       help='Metric-Solver safetensors checkpoint (default: the bundled model)')
    model.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    model.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                       help='network precision (decoding is always fp32)')
    model.add_argument('--flip-tta', action='store_true',
                       help='average the image and its mirror (the paper\'s evaluation protocol; '
                            'about 2x the network time)')
    return model


def engine_from_args(args: argparse.Namespace):
    """The :class:`~metric_solver_ros.engine.DepthEngine` the model options ask for."""
    from metric_solver_ros.engine import DepthEngine

    return DepthEngine.from_checkpoint(
        None if args.checkpoint is None else str(args.checkpoint), device=args.device,
        precision=args.precision, flip_tta=args.flip_tta)
