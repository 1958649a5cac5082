"""The ``metric-solver`` command line: one entry point, one module per sub-command.

Each sub-command lives in its own module under ``metric_solver_ros.commands`` exposing
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their heavy
dependencies (torch, rclpy, rosbags) inside ``run``, so ``metric-solver --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from metric_solver_ros.process_life import forward_package_logs, print_log_writer

# command -> (module, one-line help). The one place that lists the commands.
COMMANDS: dict[str, tuple[str, str]] = {
    'convert': ('metric_solver_ros.commands.convert',
                'write a Metric-Solver checkpoint initialised from official DINOv2 / DA-V2 files'),
    'info': ('metric_solver_ros.commands.info', 'print the config and parameter counts of a model'),
    'train': ('metric_solver_ros.commands.train', 'train or fine-tune a Metric-Solver model'),
    'distill': ('metric_solver_ros.commands.distill',
                'teach a Metric-Solver student with a metric teacher (DA-V2 or ours) on your '
                'images, video or bag; no ground truth needed'),
    'finetune': ('metric_solver_ros.commands.finetune',
                 "fine-tune on a robot's own bag (RGB-D or LiDAR ground truth); report the "
                 'holdout before and after'),
    'eval': ('metric_solver_ros.commands.eval',
             'accuracy on a rosbag (or synthetic scenes): metrics.json, metrics.csv, report.md'),
    'predict': ('metric_solver_ros.commands.predict',
                'metric depth for image files: .npy, 16-bit mm PNG, colour figure, mask, PLY'),
    'replay': ('metric_solver_ros.commands.replay',
               'play a bag into a running node, record its answers into a bag, report latency'),
    'bench': ('metric_solver_ros.commands.bench',
              'time the stages of a frame (encoder, decoders, batched vs sequential anchors)'),
    'export': ('metric_solver_ros.commands.export',
               'the model as ONNX graphs (encoder, anchor-batched decoder) + JSON sidecar'),
    'make-bag': ('metric_solver_ros.commands.make_bag',
                 'write an RGB-D rosbag2 (image, camera_info, GT depth) from a folder or '
                 'synthetic scenes'),
    'weights': ('metric_solver_ros.commands.weights',
                'list the official DINOv2 / Depth Anything V2 checkpoints; download one into '
                'the cache'),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog='metric-solver', description='Metric-Solver monocular metric depth tools.')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``metric-solver`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    # the engine's own lines (ONNX export, device and backend choices) on stderr
    forward_package_logs(print_log_writer('metric-solver'))
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, ValueError) as exc:
        # Expected user errors (bad paths, bad checkpoints, bad arguments): one clear line.
        print(f'metric-solver {args.command}: error: {exc}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
