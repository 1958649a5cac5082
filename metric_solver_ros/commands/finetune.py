r"""``metric-solver finetune``: adapt a model to a robot's camera with the robot's own bag.

Examples::

    # RealSense-style bag: depth registered to the colour image
    metric-solver finetune --bag robot_bag --image-topic /camera/color/image_raw \
        --camera-info-topic /camera/color/camera_info \
        --depth-topic /camera/aligned_depth_to_color/image_raw --steps 2000 \
        --out robot.safetensors --report robot_report.json
    # LiDAR bag: the cloud moved into the camera through /tf_static and projected
    metric-solver finetune --bag robot_bag --image-topic /camera/image_raw/compressed \
        --camera-info-topic /camera/camera_info --lidar-topic /lidar/points --steps 2000 \
        --anchors 10 --cap 80 --out robot.safetensors --report robot_report.json
    # several GPUs: the same options through torchrun
    torchrun --standalone --nproc_per_node=4 -m metric_solver_ros.cli finetune ...

The bag's last ``--holdout-fraction`` of time is held out (never trained on) and scored before
and after training with ``eval``'s metrics; the rest is the training set of the training
pipeline (``metric_solver_ros.train``: its losses, anchor sampling, EMA, autocast and DDP) as a
``rosbag`` data source. Sanity checks run first (``metric_solver_ros.data.rosbag``): a failed one
exits 2 with the reason, and nothing is written at ``--out``. The model goes to ``--out`` only
once training and the after-evaluation are done; ``--steps 0`` only evaluates. See
docs/FINETUNE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
from typing import Any

#: Fine-tuning defaults (encoder lr; the heads get ``head_lr_mult`` = 10x, the train default).
FINETUNE_LR = 1e-4
FINETUNE_WARMUP_FRACTION = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver finetune``."""
    bag = parser.add_argument_group('bag')
    bag.add_argument('--bag', type=pathlib.Path, required=True,
                     help='rosbag2 directory, .mcap or .db3 file of the robot')
    bag.add_argument('--image-topic', required=True, metavar='T',
                     help='sensor_msgs/Image or CompressedImage topic of the camera')
    bag.add_argument('--camera-info-topic', required=True, metavar='T',
                     help="the camera's CameraInfo topic")
    truth = bag.add_mutually_exclusive_group(required=True)
    truth.add_argument('--depth-topic', metavar='T',
                       help='ground truth: depth registered to the image (16UC1 mm / 32FC1 m)')
    truth.add_argument('--lidar-topic', metavar='T',
                       help='ground truth: PointCloud2 projected through /tf_static (and /tf)')
    bag.add_argument('--holdout-fraction', type=float, default=0.2, metavar='F',
                     help="the bag's last share of time held out for before/after scores, never "
                          'trained on (default: %(default)s)')
    bag.add_argument('--tolerance-ms', type=float, default=None, metavar='MS',
                     help='largest image / ground-truth stamp difference [ms] (default: 20 for '
                          'depth, 50 for LiDAR)')
    bag.add_argument('--stride', type=int, default=1, metavar='N',
                     help='train on every N-th frame of the train part (default: %(default)s)')
    train = parser.add_argument_group('training')
    train.add_argument('--init', type=pathlib.Path, default=None, metavar='CHECKPOINT',
                       help='Metric-Solver checkpoint to start from (default: the bundled model)')
    train.add_argument('--steps', type=int, required=True, metavar='N',
                       help='optimizer steps (0: only evaluate)')
    train.add_argument('--batch-size', type=int, default=8, metavar='B',
                       help='images per step and process (default: %(default)s)')
    train.add_argument('--lr', type=float, default=FINETUNE_LR,
                       help="encoder learning rate; the heads' is 10x (default: %(default)s)")
    train.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                       help="training (and the result's inference) size [px], multiples of 14 "
                            "(default: the model's input_size)")
    train.add_argument('--ema-decay', type=float, default=0.0,
                       help='weight EMA of the training pipeline (default: off)')
    train.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    train.add_argument('--amp', default='auto', choices=('auto', 'bf16', 'off'),
                       help='autocast of training (default: %(default)s)')
    train.add_argument('--seed', type=int, default=1337, help='seed of data order and anchors')
    metrics = parser.add_argument_group('holdout metrics (as eval takes them)')
    metrics.add_argument('--anchors', type=float, nargs='+', default=None, metavar='M',
                         help='anchors [m], each scored separately (default: 2 10 40)')
    metrics.add_argument('--cap', type=float, default=80.0,
                         help='GT cap [m]: 10 indoors, 80 outdoors (default: %(default)s)')
    out = parser.add_argument_group('outputs')
    out.add_argument('--out', type=pathlib.Path, required=True, metavar='FILE',
                     help='fine-tuned checkpoint (.safetensors) to write')
    out.add_argument('--report', type=pathlib.Path, default=None, metavar='FILE',
                     help='JSON report: {"frames": {"train", "holdout"}, "before", "after"}')


def _check(args: argparse.Namespace) -> None:
    """Reject inconsistent options with a ValueError that names them."""
    if args.steps < 0:
        raise ValueError(f'--steps must be >= 0, got {args.steps}')
    if not 0.0 < args.holdout_fraction < 1.0:
        raise ValueError(f'--holdout-fraction must be in (0, 1), got {args.holdout_fraction}')
    if args.batch_size < 1 or args.stride < 1:
        raise ValueError('--batch-size and --stride must be >= 1')
    if not args.cap > 1e-3:
        raise ValueError(f'--cap must be > 0.001 m, got {args.cap}')
    if args.anchors is not None and any(not a > 0 for a in args.anchors):
        raise ValueError(f'anchors must be > 0 m, got {args.anchors}')
    if args.init is not None and not args.init.is_file():
        raise FileNotFoundError(f'--init {args.init}: no such file')
    if args.init is not None and args.init.resolve() == args.out.resolve():
        raise ValueError('--out must not overwrite --init')
    if args.out.is_dir():
        raise ValueError(f'--out {args.out} is a directory; give a .safetensors file name')


def _holdout_scores(checkpoint: pathlib.Path, frames: list[Any], anchors: tuple[float, ...],
                    args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``eval``'s ``results`` (``anchor=<a>`` -> frame-mean metrics) of a model on the holdout."""
    from metric_solver_ros import evaluation
    from metric_solver_ros.engine import DepthEngine
    from metric_solver_ros.eval_report import jsonable

    engine = DepthEngine.from_checkpoint(str(checkpoint), device=args.device)
    result = evaluation.evaluate(
        evaluation.sample_frames(frames), evaluation.EnginePredictor(engine, anchors),
        cap_m=args.cap, examples=0, total=len(frames), progress=False)

    return {name: jsonable(aggregator.frame_mean()) for name, aggregator in result.results.items()}


def _train_config(args: argparse.Namespace, init: pathlib.Path, run_dir: pathlib.Path) -> Any:
    """The ``TrainConfig`` of the fine-tuning run: the bag's train part as a rosbag source."""
    from metric_solver_ros.checkpoint import read_checkpoint_config
    from metric_solver_ros.train_config import TrainConfig

    model_config = read_checkpoint_config(init)
    image_size = tuple(args.image_size or model_config.input_size)
    source: dict[str, Any] = {
        'source': 'rosbag', 'path': str(args.bag), 'image_topic': args.image_topic,
        'camera_info_topic': args.camera_info_topic, 'split': 'train',
        'holdout_fraction': args.holdout_fraction, 'tolerance_ms': args.tolerance_ms,
        'stride': args.stride, 'quiet': True}  # the holdout load already printed warnings
    if args.depth_topic:
        source['depth_topic'] = args.depth_topic
    else:
        source['lidar_topic'] = args.lidar_topic
    return TrainConfig(
        out_dir=str(run_dir), resume=False, init_from=str(init), preset=model_config.preset,
        # a given size is also the result's inference size: train and infer at one focal length
        model={'input_size': list(image_size)} if args.image_size else {},
        data=[source], image_size=image_size, batch_size=args.batch_size,
        max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
        warmup_steps=int(FINETUNE_WARMUP_FRACTION * args.steps), ema_decay=args.ema_decay,
        eval_frames=0, eval_interval=0, checkpoint_interval=0,
        log_interval=max(1, min(50, args.steps // 10)), device=args.device, amp=args.amp,
        seed=args.seed)


def _write_atomically(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (never half-written)."""
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    """Check, evaluate, fine-tune, evaluate, write; return 0 (ValueError etc. on failure)."""
    from metric_solver_ros.checkpoint import default_model_path
    from metric_solver_ros.data.rosbag import BagRGBD
    from metric_solver_ros.evaluation import DEFAULT_EVAL_ANCHORS_M

    _check(args)
    init = args.init or default_model_path()
    anchors = tuple(dict.fromkeys(args.anchors or DEFAULT_EVAL_ANCHORS_M))
    master = int(os.environ.get('RANK', '0')) == 0  # under torchrun only rank 0 scores and writes
    # Under torchrun the other ranks wait for rank 0 in the process group's set-up: score the
    # start after training there, so a long holdout cannot run into that wait's timeout.
    score_first = master and int(os.environ.get('WORLD_SIZE', '1')) == 1

    # The holdout at the recorded resolution; loading it runs the sanity checks.
    holdout = BagRGBD(args.bag, args.image_topic, args.camera_info_topic,
                      depth_topic=args.depth_topic, lidar_topic=args.lidar_topic,
                      split='holdout', holdout_fraction=args.holdout_fraction,
                      tolerance_ms=args.tolerance_ms, quiet=not master)
    counts = holdout.split_counts
    if counts['holdout'] == 0:
        raise ValueError(f'the last {args.holdout_fraction:g} of {args.bag} holds no paired '
                         'frame: record a longer bag or raise --holdout-fraction')
    if args.steps > 0 and counts['train'] == 0:
        raise ValueError(f'{args.bag} has no paired frame before its holdout: nothing to train '
                         'on; lower --holdout-fraction')
    frames = {'train': counts['train'], 'holdout': counts['holdout']}
    if master:
        print(f'{args.bag}: {frames["train"]} train and {frames["holdout"]} holdout frames '
              f'({args.lidar_topic or args.depth_topic})', flush=True)
    if score_first:
        before = _holdout_scores(init, holdout.samples, anchors, args)
        _print_scores('before', before)

    after_path = init
    run_dir = args.out.parent / f'.{args.out.name}.finetune'
    try:
        if args.steps > 0:
            from metric_solver_ros import train
            from metric_solver_ros.train_state import CKPT_FILE

            if master:
                shutil.rmtree(run_dir, ignore_errors=True)  # a crashed earlier run's leftovers
            summary = train.train(_train_config(args, init, run_dir))
            after_path = run_dir / CKPT_FILE
        if not master:
            return 0
        if not score_first:
            before = _holdout_scores(init, holdout.samples, anchors, args)
            _print_scores('before', before)
        after = _holdout_scores(after_path, holdout.samples, anchors, args)
        _print_scores('after', after)
        report = {'frames': frames, 'before': before, 'after': after,
                  'config': {'bag': str(args.bag), 'init': str(init), 'steps': args.steps,
                             'ground_truth': args.lidar_topic or args.depth_topic,
                             'anchors_m': list(anchors), 'cap_m': args.cap,
                             'warnings': holdout.stats.warnings}}
        if args.steps > 0:
            report['config']['elapsed_s'] = summary['elapsed_s']
            args.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(after_path, args.out)
            print(f'wrote {args.out}')
        else:
            print(f'--steps 0: evaluated only; nothing written at {args.out}')
        if args.report is not None:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(args.report, json.dumps(report, indent=2, allow_nan=False) + '\n')
            print(f'wrote {args.report}')
    finally:
        if master:
            shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def _print_scores(label: str, results: dict[str, dict[str, Any]]) -> None:
    """One line per result: delta1, AbsRel, RMSE."""
    for name, m in results.items():
        cells = '  '.join(f'{key} {m[key]:.4f}' if m.get(key) is not None else f'{key} -'
                          for key in ('delta1', 'abs_rel', 'rmse'))
        print(f'{label:>6} {name:>12}  {cells}', file=sys.stdout, flush=True)
