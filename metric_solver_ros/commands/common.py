"""Options shared by several commands, each defined once.

The model options (eval, predict, bench) and the bag options (eval, replay).
"""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Mapping
from typing import Any

#: Default topics of a bag's colour image and its registered ground-truth depth.
DEFAULT_IMAGE_TOPIC = '/camera/color/image_raw'
DEFAULT_DEPTH_TOPIC = '/camera/depth/image_raw'


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


def add_bag_arguments(group: Any, bag_group: Any = None,
                      uses: Mapping[str, str] | None = None) -> None:
    """Add the bag options: ``--bag``, its topics and ``--max-frames``.

    The topics are ``--image-topic``, ``--depth-topic`` and ``--camera-info-topic``; their names
    and defaults are the same for every command, what a command does with them is ``uses``.

    Args:
        group: Parser or argument group that gets the topic options and ``--max-frames``.
        bag_group: Where ``--bag`` goes, e.g. a required mutually exclusive group of input
            sources; None: ``group``, with ``--bag`` required.
        uses: Option -> what the command does with it (appended to the option's help).
    """
    uses = dict(uses or {})

    def described(option: str, text: str, default: bool = False) -> str:
        use = uses.pop(option, None)
        return text + (f'; {use}' if use else '') + (' (default: %(default)s)' if default else '')

    target = group if bag_group is None else bag_group
    target.add_argument('--bag', type=pathlib.Path, required=bag_group is None,
                        help=described('--bag', 'rosbag2 directory, .mcap or .db3 file (mcap '
                                       'or sqlite3 storage)'))
    group.add_argument('--image-topic', default=DEFAULT_IMAGE_TOPIC,
                       help=described('--image-topic', 'sensor_msgs/Image or CompressedImage '
                                      'topic of the bag', default=True))
    group.add_argument('--depth-topic', default=DEFAULT_DEPTH_TOPIC,
                       help=described('--depth-topic', 'ground-truth depth topic, 32FC1 [m] or '
                                      '16UC1 [mm], registered to the image', default=True))
    group.add_argument('--camera-info-topic', default=None,
                       help=described('--camera-info-topic', 'CameraInfo topic of the bag'))
    group.add_argument('--max-frames', type=int, default=None, metavar='N',
                       help=described('--max-frames', 'stop after N frames'))
    if uses:
        raise ValueError(f'no bag option {", ".join(uses)}')


def check_bag_arguments(args: argparse.Namespace) -> None:
    """Reject bag option values that cannot work (ValueError naming the option)."""
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f'--max-frames must be >= 1, got {args.max_frames}')
