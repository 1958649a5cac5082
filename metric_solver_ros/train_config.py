"""The training config: ``TrainConfig``, its YAML / command-line loading and the schedule.

Torch-free, so ``metric-solver --help`` and tools that only read a run's config do not load
torch. Each field's meaning is its ``help`` metadata: the text ``--help`` prints for the field's
``--<name>`` option (:func:`add_config_arguments`), and the one place it is written.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
from dataclasses import dataclass, field, fields
from typing import Any

DATA_SOURCES = ('synthetic', 'rgbd_folder', 'hypersim', 'vkitti2', 'rosbag')
"""The ``source`` names a ``data`` entry may give (``train_data`` builds each)."""


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in every checkpoint as ``train_config``).

    Defaults here, a YAML file over them, command-line overrides over that
    (:func:`load_config`). Each field's meaning is its ``help`` metadata (:func:`config_fields`).
    """

    # I/O and logging
    out_dir: str = field(default='out/train', metadata={'help': (
        'Output directory (checkpoints, ``log.jsonl``); resumed from if it holds a run.')})
    resume: bool = field(default=True, metadata={'help': (
        'Resume from ``out_dir/train_state.pt`` when it exists.')})
    init_from: str = field(default='scratch', metadata={'help': (
        '``scratch``; a Metric-Solver ``.safetensors`` checkpoint (fine-tuning; its config '
        'is used, updated by ``model``); or an official DINOv2 / Depth Anything V2 ``.pth`` '
        '(loaded into a ``preset`` model with the checkpoint importers).')})
    log_interval: int = field(default=10, metadata={'help': (
        'Print and log the training loss every N steps.')})
    eval_interval: int = field(default=1000, metadata={'help': (
        'Evaluate every N steps (and at the end); 0: only at the end.')})
    checkpoint_interval: int = field(default=1000, metadata={'help': (
        'Save every N steps (and at the end); 0: only at the end.')})
    eval_frames: int = field(default=16, metadata={'help': (
        'Held-out synthetic frames per scene kind (indoor, outdoor); 0: no eval.')})
    eval_batch_size: int = field(default=8, metadata={'help': (
        'Frames per evaluation forward pass.')})
    time_budget_s: float = field(default=0.0, metadata={'help': (
        'Wall-clock budget [s] over all resumed pieces of the run (0: none); when spent, the '
        'run saves and stops cleanly.')})
    # model
    preset: str = field(default='tiny', metadata={'help': (
        "Model preset ('tiny', 'vits', 'vitb', 'vitl', 'vitg').")})
    model: dict[str, Any] = field(default_factory=dict, metadata={'help': (
        '``MetricSolverConfig`` overrides applied to the preset (or to the config of an '
        '``init_from`` checkpoint), e.g. ``{embed_dim: 96, depth: 6, taps: []}``.')})
    # data
    data: list[dict[str, Any]] = field(
        default_factory=lambda: [{'source': 'synthetic', 'kind': 'mixed', 'weight': 1.0}],
        metadata={'help': (
        'Sources, each ``{source: synthetic | rgbd_folder | hypersim | vkitti2 | rosbag, '
        'weight: w, ...}``; synthetic takes ``kind`` (indoor, outdoor, mixed) and ``length`` '
        "(number of distinct scenes), rosbag ``path``, ``image_topic``, ``camera_info_topic``, "
        '``depth_topic`` or ``lidar_topic`` and ``data.rosbag.BagRGBD``\'s other keyword '
        "arguments (``split``, ``holdout_fraction``, ...), the others ``root`` plus their "
        "reader's keyword arguments. Several sources are mixed per sample with probabilities "
        'proportional to ``weight``.')})
    image_size: tuple[int, int] = field(default=(196, 252), metadata={'help': (
        'Training image (H, W) [px], multiples of the patch size (14).')})
    augment: bool = field(default=True, metadata={'help': (
        'Random crop / flip / colour jitter of on-disk sources (synthetic scenes are already '
        'random).')})
    augment_scale_range: tuple[float, float] = field(default=(1.0, 1.0), metadata={'help': (
        'Zoom range of that augmentation; (1, 1) keeps the focal length, which a model '
        'without camera input needs to read metric scale.')})
    num_workers: int = field(default=0, metadata={'help': (
        'DataLoader worker processes (0: load and render in the training process; '
        'pure-synthetic data is then rendered directly on the training device).')})
    scene_workers: int = field(default=0, metadata={'help': (
        'With pure-synthetic data and ``num_workers: 0``: processes that lay out the scenes '
        '(Python/numpy, ~2 ms each on one core) while the device renders and trains; 0 lays '
        'them out in the training process, which bounded an H200 at ~180 images/s '
        '(docs/TRAINING.md). The batches are the same for any value.')})
    # anchors
    anchor_sampling: str = field(default='pool', metadata={'help': (
        '``pool``: one anchor drawn uniformly from the pool per image per step; ``fixed``: '
        'always ``fixed_anchor_m`` (the "fixed anchor" ablation).')})
    fixed_anchor_m: float = field(default=10.0, metadata={'help': (
        'The anchor of ``anchor_sampling: fixed`` [m].')})
    anchor_max_m: float = field(default=0.0, metadata={'help': (
        '``pool`` sampling draws only the pool anchors <= this [m] (0: the whole pool); e.g. '
        "a distillation teacher's range (``metric-solver distill``).")})
    label_cap_m: float = field(default=0.0, metadata={'help': (
        'Depths >= this [m] are lower bounds, not measurements (a teacher that saturates at '
        'its maximum depth): taught as far for anchors below it, with a far depth of at least '
        'this, never as a metric depth (``losses.py``); 0: off.')})
    # optimisation
    batch_size: int = field(default=8, metadata={'help': 'Images per process per micro-step.'})
    grad_accum_steps: int = field(default=1, metadata={'help': (
        'Micro-steps per optimizer step (effective batch: batch_size x grad_accum_steps x '
        'processes).')})
    max_steps: int = field(default=20000, metadata={'help': 'Optimizer steps of the whole run.'})
    lr: float = field(default=3e-4, metadata={'help': 'Peak learning rate of the encoder (AdamW).'})
    head_lr_mult: float = field(default=10.0, metadata={'help': (
        "Heads' and anchor pool's learning rate / encoder's.")})
    min_lr: float = field(default=3e-5, metadata={'help': (
        'Final encoder learning rate of the cosine decay.')})
    warmup_steps: int = field(default=500, metadata={'help': 'Linear warmup steps.'})
    lr_decay_steps: int = field(default=0, metadata={'help': (
        'Step at which the cosine reaches ``min_lr`` (0: ``max_steps``).')})
    schedule_by_time: bool = field(default=False, metadata={'help': (
        'With a ``time_budget_s``, advance the schedule by the larger of ``step / '
        'max_steps`` and ``elapsed / time_budget_s``: the cosine ends when the budget does '
        'even when the machine is slower than planned.')})
    weight_decay: float = field(default=0.05, metadata={'help': (
        'AdamW weight decay of weight matrices and convolutions (none on norms, biases, '
        'LayerScale, tokens, positional embedding and the anchor pool).')})
    beta1: float = field(default=0.9, metadata={'help': 'AdamW beta1.'})
    beta2: float = field(default=0.999, metadata={'help': 'AdamW beta2.'})
    grad_clip: float = field(default=1.0, metadata={'help': (
        'Clip the global gradient norm to this (0: off).')})
    ema_decay: float = field(default=0.0, metadata={'help': (
        'Exponential moving average of the weights (0: off); the EMA is what gets evaluated '
        'and saved as ``ckpt.safetensors``.')})
    loss_weights: tuple[float, ...] = field(default=(1.0, 1.0, 0.05), metadata={'help': (
        "(near L2, far L2, mask BCE) weights, the paper's (1.0, 1.0, 0.05); a 4th value "
        'weights the auxiliary SILog term on the fused depth (not in the paper; '
        '``losses.py``), e.g. ``[1.0, 1.0, 0.05, 0.1]``; a 5th the cross-anchor consistency '
        'term (each image decoded at two different pool anchors; needs ``anchor_sampling: '
        'pool``), e.g. ``[1.0, 1.0, 0.05, 0.1, 0.1]``.')})
    # system
    device: str = field(default='auto', metadata={'help': (
        '``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``), ``cpu``, '
        '``cuda``, ``cuda:N``.')})
    amp: str = field(default='auto', metadata={'help': (
        'Autocast dtype: ``auto`` (bf16 on GPUs with bf16 hardware, else off), ``bf16`` or '
        '``off``.')})
    compile: bool = field(default=False, metadata={'help': '``torch.compile`` the model.'})
    num_threads: int = field(default=0, metadata={'help': (
        "``torch.set_num_threads`` for CPU runs (0: leave torch's default).")})
    seed: int = field(default=1337, metadata={'help': (
        'Seed of the initialisation, the data order and the anchors.')})

    def __post_init__(self) -> None:
        """Normalise YAML lists to tuples and reject invalid values with a clear message."""
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        self.augment_scale_range = tuple(float(v) for v in self.augment_scale_range)  # type: ignore[assignment]
        self.loss_weights = tuple(float(v) for v in self.loss_weights)  # type: ignore[assignment]
        self.model = dict(self.model or {})
        self.data = [dict(d) for d in self.data]
        if self.amp is False:  # YAML 1.1 reads a bare `off` as false
            self.amp = 'off'
        for f in fields(self):  # YAML 1.1 reads `3e-4` (no dot) as a string: coerce numbers
            value = getattr(self, f.name)
            try:
                if f.type in ('float', 'int') and not isinstance(value, bool):
                    number = float(value)
                    if f.type == 'int' and number != int(number):
                        raise ValueError
                    setattr(self, f.name, int(number) if f.type == 'int' else number)
                elif f.type == 'bool' and not isinstance(value, bool):
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(f'train config: {f.name} must be of type {f.type}, got '
                                 f'{value!r}') from None
        checks = [
            (len(self.image_size) == 2 and min(self.image_size) > 0, 'image_size must be (H, W)'),
            (len(self.loss_weights) in (3, 4, 5), 'loss_weights must be 3 to 5 numbers'),
            (len(self.loss_weights) < 5 or self.loss_weights[4] <= 0
             or self.anchor_sampling == 'pool',
             'the consistency weight (5th loss weight) needs anchor_sampling: pool'),
            (len(self.augment_scale_range) == 2, 'augment_scale_range must be (lo, hi)'),
            (self.batch_size >= 1 and self.grad_accum_steps >= 1, 'batch sizes must be >= 1'),
            (self.max_steps >= 1, 'max_steps must be >= 1'),
            (self.lr > 0 and 0 <= self.min_lr <= self.lr, 'need lr > 0 and 0 <= min_lr <= lr'),
            (self.warmup_steps >= 0 and self.lr_decay_steps >= 0, 'step counts must be >= 0'),
            (0.0 <= self.ema_decay < 1.0, 'ema_decay must be in [0, 1)'),
            (self.anchor_max_m >= 0 and self.label_cap_m >= 0,
             'anchor_max_m and label_cap_m must be >= 0 (0: off)'),
            (self.anchor_sampling in ('pool', 'fixed'), "anchor_sampling: 'pool' or 'fixed'"),
            (self.amp in ('auto', 'bf16', 'off'), "amp: 'auto', 'bf16' or 'off'"),
            (self.log_interval >= 1, 'log_interval must be >= 1'),
            (min(self.eval_interval, self.checkpoint_interval, self.eval_frames) >= 0,
             'intervals and eval_frames must be >= 0'),
            (self.eval_batch_size >= 1, 'eval_batch_size must be >= 1'),
            (min(self.num_workers, self.scene_workers) >= 0, 'worker counts must be >= 0'),
            (self.time_budget_s >= 0, 'time_budget_s must be >= 0'),
            (len(self.data) >= 1, 'data needs at least one source'),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f'train config: {message}')
        for spec in self.data:
            if spec.get('source') not in DATA_SOURCES:
                raise ValueError(f'train config: data source {spec.get("source")!r} is not one '
                                 f'of {", ".join(DATA_SOURCES)}')
            if float(spec.get('weight', 1.0)) <= 0:
                raise ValueError(f'train config: data weight must be > 0 in {spec}')


def load_config(path: str | os.PathLike | None = None,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Build a :class:`TrainConfig` from defaults, a YAML file and overrides (in that order).

    Args:
        path: YAML file of ``TrainConfig`` fields (None: defaults only).
        overrides: Field values applied last; a ``model`` mapping is merged into the YAML's.

    Raises:
        ValueError: Unknown keys or invalid values.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f'{path}: a train config must be a YAML mapping')
    for key, value in (overrides or {}).items():
        if key == 'model' and isinstance(value, dict):
            values['model'] = {**(values.get('model') or {}), **value}
        else:
            values[key] = value
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f'unknown train config keys: {", ".join(unknown)}')
    return TrainConfig(**values)


def get_lr(it: float, cfg: TrainConfig) -> float:
    """Encoder learning rate at (possibly fractional) step ``it``: linear warmup, cosine to min_lr.

    The heads use ``head_lr_mult`` times this value.
    """
    decay_steps = cfg.lr_decay_steps or cfg.max_steps
    if it < cfg.warmup_steps:  # 1) linear warmup
        return cfg.lr * (it + 1) / (cfg.warmup_steps + 1)
    if it >= decay_steps:  # 2) after the decay: min_lr
        return cfg.min_lr
    ratio = (it - cfg.warmup_steps) / max(decay_steps - cfg.warmup_steps, 1)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 3) cosine from lr to min_lr
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


def schedule_position(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """Where the schedule stands after ``step`` steps and ``elapsed_s`` [s] of the run.

    ``step``, or with ``schedule_by_time`` and a ``time_budget_s`` the larger of ``step`` and
    the share of the budget spent times ``max_steps``: the cosine ends when the budget does.
    """
    position = float(step)
    if cfg.schedule_by_time and cfg.time_budget_s > 0:
        position = max(position, cfg.max_steps * elapsed_s / cfg.time_budget_s)
    return position


# -----------------------------------------------------------------------------------------------
# The command line: one ``--<field>`` option per field (``metric-solver train`` and
# ``python -m metric_solver_ros.train`` share it).


def config_fields() -> list[tuple[str, str]]:
    """``(name, help)`` of every ``TrainConfig`` field, in declaration order."""
    return [(f.name, f.metadata['help']) for f in fields(TrainConfig)]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``--config`` and one ``--<field>`` option per ``TrainConfig`` field."""
    parser.add_argument('--config', type=pathlib.Path, default=None,
                        help='YAML file of TrainConfig fields (e.g. config/train_default.yaml)')
    group = parser.add_argument_group('config overrides (values parsed as YAML)')
    for name, help_text in config_fields():
        group.add_argument(f'--{name}', dest=f'override_{name}', default=None, metavar='VALUE',
                           help=help_text.replace('%', '%%'))


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config that the options of :func:`add_config_arguments` ask for.

    Raises:
        FileNotFoundError: ``--config`` names no file.
        ValueError: Unknown keys or invalid values (:func:`load_config`).
    """
    if args.config is not None and not args.config.is_file():
        raise FileNotFoundError(f'{args.config}: no such config file')
    return load_config(args.config, overrides_from_args(args))
