r"""Distil a metric teacher into a Metric-Solver student: no ground truth needed.

Run commands::

    metric-solver weights get depth_anything_v2_metric_hypersim_vits
    metric-solver distill --teacher dav2-metric:depth_anything_v2_metric_hypersim_vits \
        --bag my_bag --image-topic /camera/color/image_raw --every 5 \
        --preset vits --init-from-teacher --steps 20000 --batch-size 16 \
        --out vits_student.safetensors --report vits_student.json
    # N GPUs on one node: the same options under torchrun (DDP, as `train`)
    torchrun --standalone --nproc_per_node=N -m metric_solver_ros.distill --teacher ... --out ...

There is no second training loop. Rank 0 labels the frames once with the teacher into two RGB-D
folders of pseudo ground truth beside ``--out`` (``<out stem>.distill/labels/{train,holdout}``;
the other ranks wait for its ``prepared.json``), writes the student's starting weights there,
and every rank then runs ``train.train`` on a ``TrainConfig`` whose data is the ``train``
folder, whose anchors stay within the teacher's range (``anchor_max_m``) and whose depths at
the teacher's cap are lower bounds (``label_cap_m``, ``losses.py``). Rank 0 finally writes
``--out`` (the run's checkpoint, with the teacher and the data in its metadata) and the report:
the student against the teacher on the held-out frames, before and after training, through
the evaluation pipeline. Design and choices: ``docs/DISTILL.md``.

A rerun with the same settings reuses the labels and resumes the run (``--steps`` may grow);
other settings in the same work folder are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
from dataclasses import dataclass
from typing import Any

from metric_solver_ros.distill_prep import STUDENT_INIT, prepare, wait_prepared
from metric_solver_ros.frame_sources import FrameSource
from metric_solver_ros.process_life import forward_package_logs, print_log_writer
from metric_solver_ros.teacher import TEACHER_KINDS, TeacherFile, TeacherSpec

FORMAT_VERSION = 1  # of the work folder: a new version relabels
#: Options that ``distill`` sets itself; a ``--config`` file may not.
DISTILL_FIELDS = ('out_dir', 'init_from', 'preset', 'data', 'max_steps', 'anchor_max_m',
                  'label_cap_m', 'eval_frames', 'resume')
#: Reported metrics of the student against the teacher (``metrics.METRIC_NAMES`` and more).
REPORT_METRICS = ('delta1', 'delta2', 'delta3', 'abs_rel', 'rmse', 'silog', 'delta1_aligned')


@dataclass(frozen=True)
class DistillOptions:
    """What ``metric-solver distill`` was asked (the command's options).

    Attributes:
        teacher: The teacher (``--teacher``, ``--teacher-max-depth``).
        source: The frames (``--images`` / ``--video`` / ``--bag``, ``--every``,
            ``--max-frames``).
        preset: The student's preset.
        steps: Optimizer steps.
        out: The student checkpoint to write; the work folder is ``<stem>.distill`` beside it.
        init_from_teacher: Start the student from the teacher's weights where they fit.
        batch_size: Images per process and step (None: the config's).
        image_size: Training (H, W) [px] (None: the config's).
        holdout_fraction: Share of the frames held out for the report (the last ones).
        report: Where to write the report JSON (None: only into the work folder).
        config: A YAML of further ``TrainConfig`` fields (lr, ema_decay, amp, num_workers...).
        teacher_input_px: The teacher's network input short side [px] (None: its default).
        device: ``auto``, ``cpu``, ``cuda[:N]`` (None: the config's).
        seed: Seed of the student's initialisation and the training (None: the config's).
        cache_dir: The weights cache (None: the default).
    """

    teacher: TeacherSpec
    source: FrameSource
    preset: str
    steps: int
    out: pathlib.Path
    init_from_teacher: bool = False
    batch_size: int | None = None
    image_size: tuple[int, int] | None = None
    holdout_fraction: float = 0.1
    report: pathlib.Path | None = None
    config: pathlib.Path | None = None
    teacher_input_px: int | None = None
    device: str | None = None
    seed: int | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        """Reject values no run could use."""
        if self.steps < 1:
            raise ValueError(f'--steps must be >= 1, got {self.steps}')
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f'--holdout-fraction must be in [0, 1), got {self.holdout_fraction}')


def work_dir(out: pathlib.Path) -> pathlib.Path:
    """The work folder of ``--out``: ``<stem>.distill`` beside it (labels, run, report)."""
    return out.parent / f'{out.stem}.distill'


def training_config(opts: DistillOptions, work: pathlib.Path, teacher: TeacherFile) -> Any:
    """The ``TrainConfig`` of the run: distill's defaults < ``--config`` < the options.

    Defaults (docs/DISTILL.md): encoder lr 2e-5 from the teacher's weights, 3e-4 from scratch,
    cosine to a tenth of it; warmup a twentieth of the steps (at most 500); DataLoader workers
    on a GPU machine.

    Raises:
        ValueError: ``--config`` sets a field that distill sets itself (``DISTILL_FIELDS``).
    """
    import torch
    import yaml

    from metric_solver_ros.train_config import load_config

    given: dict[str, Any] = {}
    if opts.config is not None:
        if not opts.config.is_file():
            raise FileNotFoundError(f'--config {opts.config}: no such file')
        given = yaml.safe_load(opts.config.read_text()) or {}
        if not isinstance(given, dict):
            raise ValueError(f'--config {opts.config}: a train config must be a YAML mapping')
        clash = sorted(set(given) & set(DISTILL_FIELDS))
        if clash:
            raise ValueError(f'--config {opts.config}: {", ".join(clash)} are set by distill '
                             f'itself (--preset, --steps, --out, the teacher)')
    lr = float(given.get('lr', 2e-5 if opts.init_from_teacher else 3e-4))
    defaults = {'lr': lr, 'min_lr': lr / 10, 'warmup_steps': min(500, opts.steps // 20),
                'eval_interval': 0, 'num_workers': 4 if torch.cuda.is_available() else 0}
    options = {'batch_size': opts.batch_size, 'image_size': opts.image_size,
               'device': opts.device, 'seed': opts.seed}
    fixed = {'out_dir': str(work / 'run'), 'init_from': str(work / STUDENT_INIT),
             'preset': opts.preset, 'max_steps': opts.steps, 'eval_frames': 0, 'resume': True,
             'data': [{'source': 'rgbd_folder', 'root': str(work / 'labels' / 'train')}],
             'anchor_max_m': teacher.anchor_max_m, 'label_cap_m': teacher.label_cap_m}
    return load_config(None, {**defaults, **given,
                              **{k: v for k, v in options.items() if v is not None}, **fixed})


def preparation_key(opts: DistillOptions, teacher: TeacherFile, cfg: Any) -> str:
    """A digest of everything the labels and the starting weights depend on."""
    record = {'version': FORMAT_VERSION, 'teacher': teacher.describe(),
              'source': opts.source.describe(), 'holdout_fraction': opts.holdout_fraction,
              'teacher_input_px': opts.teacher_input_px, 'preset': opts.preset,
              'init_from_teacher': opts.init_from_teacher, 'image_size': list(cfg.image_size),
              'model': cfg.model, 'seed': cfg.seed}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


# -----------------------------------------------------------------------------------------------
# The report: the student against the teacher on the held-out frames.


def student_vs_teacher(checkpoint: pathlib.Path, holdout: pathlib.Path,
                       anchors_m: tuple[float, ...], cap_m: float,
                       device: str) -> dict[str, Any] | None:
    """The student against the teacher's depth as ground truth, on the held-out frames.

    ``evaluation.evaluate`` with an ``EnginePredictor`` (each anchor, and their fusion) at the
    labels' resolution; teacher depths above ``cap_m`` (its saturated cap) are not scored.

    Returns:
        ``REPORT_METRICS`` of the fusion (the student's depth over the whole taught range) and
        ``results``: ``{result name: {delta1, abs_rel}}`` of every anchor and the fusion; None
        without held-out frames.
    """
    from metric_solver_ros.data.rgbd_folder import RGBDFolder
    from metric_solver_ros.engine import DepthEngine
    from metric_solver_ros.evaluation import FUSION_NAME, EnginePredictor, evaluate, sample_frames

    if not any((holdout / 'depth').glob('*.npy')):
        return None
    folder = RGBDFolder(holdout)
    engine = DepthEngine.from_checkpoint(str(checkpoint), device=device, precision='fp32')
    result = evaluate(sample_frames(folder[i] for i in range(len(folder))),
                      EnginePredictor(engine, anchors_m, fusion=True), cap_m=cap_m, examples=0,
                      total=len(folder), progress=False)
    means = {name: aggregator.frame_mean() for name, aggregator in result.results.items()}
    return {**{name: means[FUSION_NAME].get(name) for name in REPORT_METRICS},
            'results': {name: {'delta1': values['delta1'], 'abs_rel': values['abs_rel']}
                        for name, values in means.items()}}


# -----------------------------------------------------------------------------------------------
# The run.


def distill(opts: DistillOptions) -> dict[str, Any] | None:
    """Label, train, write ``--out`` and the report (rank 0); return the report (None elsewhere).

    Raises:
        FileNotFoundError: A missing teacher, frame source or ``--config``.
        ValueError: Bad options, or a work folder / run of other settings.
    """
    import torch

    from metric_solver_ros import train
    from metric_solver_ros.checkpoint import (
        RESERVED_METADATA,
        load_checkpoint,
        read_checkpoint_config,
        read_checkpoint_metadata,
        save_checkpoint,
    )
    from metric_solver_ros.engine import MAX_ANCHORS
    from metric_solver_ros.metrics import DEFAULT_CAP_M
    from metric_solver_ros.teacher import find_teacher, spread_anchors
    from metric_solver_ros.train_state import CKPT_FILE

    rank = int(os.environ.get('RANK', '0'))
    teacher = find_teacher(opts.teacher, opts.cache_dir)
    work = work_dir(opts.out)
    cfg = training_config(opts, work, teacher)
    key = preparation_key(opts, teacher, cfg)
    if rank == 0:
        work.mkdir(parents=True, exist_ok=True)
        data = prepare(opts, cfg, teacher, work, key)
    else:
        data = wait_prepared(work, key)
    # The run-defining settings (init_from, preset, model, data) are fixed or in the key: a
    # run in the work folder is always this one's to resume.
    summary = train.train(cfg)
    if rank != 0:
        return None

    pool_m = train.training_pool(cfg, torch.tensor(read_checkpoint_config(
        work / STUDENT_INIT).anchor_pool_m)).tolist()
    anchors_m = spread_anchors(pool_m, MAX_ANCHORS)
    cap_m = teacher.label_cap_m or DEFAULT_CAP_M
    device = cfg.device  # 'auto' is cuda:0 where the training was on a GPU
    holdout = work / 'labels' / 'holdout'
    trained = work / 'run' / CKPT_FILE
    report = {
        'teacher': teacher.describe(), 'frames': data['held_out_frames'],
        'student_vs_teacher': {
            'before': student_vs_teacher(work / STUDENT_INIT, holdout, anchors_m, cap_m, device),
            'after': student_vs_teacher(trained, holdout, anchors_m, cap_m, device)},
        'student': {'checkpoint': str(opts.out), 'preset': opts.preset, 'steps': summary['step'],
                    'init': data['init'], 'anchors_m': list(anchors_m), 'cap_m': cap_m},
        'data': {k: data[k] for k in ('source', 'frames', 'train_frames', 'held_out_frames')},
    }
    metadata = {k: v for k, v in read_checkpoint_metadata(trained).items()
                if k not in RESERVED_METADATA}
    metadata.update(distill_teacher=json.dumps(teacher.describe()),
                    distill_data=json.dumps(report['data']),
                    distill_report=json.dumps(report['student_vs_teacher']))
    save_checkpoint(opts.out, load_checkpoint(trained), metadata)
    text = json.dumps(report, indent=2) + '\n'
    (work / 'report.json').write_text(text)
    if opts.report is not None:
        opts.report.parent.mkdir(parents=True, exist_ok=True)
        opts.report.write_text(text)
    return report


# -----------------------------------------------------------------------------------------------
# The command line (``metric-solver distill`` and ``python -m metric_solver_ros.distill``).


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver distill``."""
    teacher = parser.add_argument_group('teacher')
    teacher.add_argument('--teacher', required=True, metavar='KIND:PATH_OR_NAME',
                         help=f'KIND {" or ".join(TEACHER_KINDS)}; a file, a registered '
                              f'dav2-metric name found in the weights cache (metric-solver '
                              f'weights get NAME), or metric-solver:default (the bundled model)')
    teacher.add_argument('--teacher-max-depth', type=float, default=None, metavar='M',
                         help='maximum depth of a dav2-metric file the registry does not know '
                              '[m] (20 Hypersim, 80 Virtual KITTI)')
    teacher.add_argument('--teacher-input-size', type=int, default=None, metavar='PX',
                         help="shorter side of the teacher's input [px] (default: 518 for "
                              "DA-V2, the checkpoint's own for metric-solver)")
    teacher.add_argument('--cache-dir', default=None, metavar='DIR',
                         help='weights cache (default: $METRIC_SOLVER_CACHE, else '
                              '~/.cache/metric_solver)')
    frames = parser.add_argument_group('frames (one source)')
    source = frames.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', type=pathlib.Path, metavar='DIR',
                        help='folder of .png / .jpg images (searched recursively, sorted)')
    source.add_argument('--video', type=pathlib.Path, metavar='FILE',
                        help='a video file OpenCV opens')
    source.add_argument('--bag', type=pathlib.Path, metavar='BAG',
                        help='rosbag2 directory, .mcap or .db3 file (with --image-topic)')
    frames.add_argument('--image-topic', default=None, metavar='T',
                        help='sensor_msgs/Image or CompressedImage topic of --bag')
    frames.add_argument('--every', type=int, default=1, metavar='N',
                        help='keep every N-th frame (default: %(default)s)')
    frames.add_argument('--max-frames', type=int, default=None, metavar='N',
                        help='keep at most N frames')
    frames.add_argument('--holdout-fraction', type=float, default=0.1, metavar='F',
                        help='share of the frames (the last ones) never trained on, for the '
                             'report (default: %(default)s)')
    student = parser.add_argument_group('student and training')
    student.add_argument('--preset', required=True,
                         help="the student's model preset (as train's --preset: tiny, vits, ...)")
    student.add_argument('--init-from-teacher', action='store_true',
                         help="start from the teacher's encoder (same architecture) and head "
                              '(where shapes allow)')
    student.add_argument('--steps', type=int, required=True, metavar='N',
                         help='optimizer steps')
    student.add_argument('--batch-size', type=int, default=None, metavar='B',
                         help='images per GPU / process and step (default: 8)')
    student.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                         help='training images [px], multiples of 14; the student infers at '
                              'the shorter side (default: 196 252)')
    student.add_argument('--config', type=pathlib.Path, default=None, metavar='YAML',
                         help='further TrainConfig fields (lr, ema_decay, amp, num_workers, '
                              'time_budget_s, ...; docs/TRAINING.md)')
    student.add_argument('--device', default=None, help='auto, cpu, cuda or cuda:N')
    student.add_argument('--seed', type=int, default=None,
                         help="seed of the student's initialisation and training")
    outputs = parser.add_argument_group('outputs')
    outputs.add_argument('--out', type=pathlib.Path, required=True, metavar='FILE',
                         help='the student checkpoint (.safetensors); labels and the run go to '
                              '<stem>.distill/ beside it')
    outputs.add_argument('--report', type=pathlib.Path, default=None, metavar='FILE',
                         help='JSON report: the student against the teacher on the held-out '
                              'frames, before and after')


def options_from_args(args: argparse.Namespace) -> DistillOptions:
    """The :class:`~metric_solver_ros.distill.DistillOptions` the parsed options ask for."""
    from metric_solver_ros.teacher import parse_teacher

    kind, path = next((k, v) for k, v in (('images', args.images), ('video', args.video),
                                          ('bag', args.bag)) if v is not None)
    if args.image_topic is not None and kind != 'bag':
        raise ValueError('--image-topic goes with --bag')
    return DistillOptions(
        teacher=parse_teacher(args.teacher, args.teacher_max_depth),
        source=FrameSource(kind, path, args.image_topic, args.every, args.max_frames),
        preset=args.preset, steps=args.steps, out=args.out,
        init_from_teacher=args.init_from_teacher, batch_size=args.batch_size,
        image_size=None if args.image_size is None else tuple(args.image_size),
        holdout_fraction=args.holdout_fraction, report=args.report, config=args.config,
        teacher_input_px=args.teacher_input_size, device=args.device, seed=args.seed,
        cache_dir=args.cache_dir)


def summary_line(report: dict[str, Any]) -> str:
    """``delta1 / abs_rel before -> after`` of a report, for the terminal."""
    def cell(which: str, name: str) -> str:
        values = report['student_vs_teacher'][which]
        value = None if values is None else values.get(name)
        return '-' if value is None else f'{value:.3f}'

    return (f'student vs teacher on {report["frames"]} held-out frames: delta1 '
            f'{cell("before", "delta1")} -> {cell("after", "delta1")}, abs_rel '
            f'{cell("before", "abs_rel")} -> {cell("after", "abs_rel")}')


def run(args: argparse.Namespace) -> int:
    """Distil as the options of :func:`add_arguments` ask; rank 0 prints the outcome."""
    opts = options_from_args(args)
    report = distill(opts)
    if report is not None:
        print(summary_line(report))
        print(f'wrote {opts.out}' + (f' and {opts.report}' if opts.report else ''))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m metric_solver_ros.distill`` / torchrun (module docstring)."""
    parser = argparse.ArgumentParser(prog='python -m metric_solver_ros.distill',
                                     description='Distil a metric teacher into a student.')
    add_arguments(parser)
    args = parser.parse_args(argv)
    forward_package_logs(print_log_writer('distill'))  # the engine's own lines, on stderr
    return run(args)


if __name__ == '__main__':
    sys.exit(main())
