"""Options shared by the commands that run the model (eval, predict, bench): one definition."""

from __future__ import annotations

import argparse
import pathlib


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the model options (checkpoint, device, precision, flip TTA, runtime); return them."""
    model = parser.add_argument_group('model')
    model.add_argument('--checkpoint', type=pathlib.Path, default=None,
                       help='Metric-Solver safetensors checkpoint (default: the bundled model)')
    model.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    model.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                       help='network precision (decoding is always fp32)')
    model.add_argument('--flip-tta', action='store_true',
                       help='average the image and its mirror (the paper\'s evaluation protocol; '
                            'about 2x the network time)')
    add_runtime_arguments(model)
    return model


def add_runtime_arguments(group) -> None:
    """Add ``--backend`` and ``--num-threads`` (README "Runtimes") to a parser or group."""
    from metric_solver_ros.backends import BACKENDS

    group.add_argument('--backend', default='torch', choices=BACKENDS,
                       help='what runs the network: torch, openvino / onnxruntime (an ONNX '
                            'export made on first use and cached), or auto (default: '
                            '%(default)s)')
    group.add_argument('--num-threads', '--threads', type=int, default=None, metavar='N',
                       help='CPU threads of the network (0: every usable core, at most 4; '
                            'default: the libraries\' own)')


def engine_from_args(args: argparse.Namespace):
    """The :class:`~metric_solver_ros.engine.DepthEngine` the model options ask for."""
    from metric_solver_ros.engine import DepthEngine

    return DepthEngine.from_checkpoint(
        None if args.checkpoint is None else str(args.checkpoint), device=args.device,
        precision=args.precision, flip_tta=args.flip_tta, backend=args.backend,
        num_threads=args.num_threads)
