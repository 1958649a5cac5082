r"""Train Metric-Solver (paper Sec. 3.3 and 4.1). One file that reads top to bottom, nanoGPT style.

Run commands::

    # CPU, one process (the bundled tiny model's recipe, ~3 h on 2 cores)
    python -m metric_solver_ros.train --config config/train_default.yaml
    metric-solver train --config config/train_default.yaml          # the same, through the CLI
    # one GPU
    python -m metric_solver_ros.train --config config/train_gpu.yaml
    # N GPUs on one node: DDP over nccl (gloo on CPU), one process per GPU
    torchrun --standalone --nproc_per_node=N -m metric_solver_ros.train \
        --config config/train_gpu.yaml
    # fine-tune a Metric-Solver checkpoint / start from official DINOv2 or Depth Anything V2
    python -m metric_solver_ros.train --config config/train_gpu.yaml \
        --init_from depth_anything_v2_vitl.pth --preset vitl --out_dir out/vitl

Overrides: every ``TrainConfig`` field as ``--name value`` after ``--config``, the value parsed
as YAML (``--lr 3e-4``, ``--image_size [196,252]``, ``--ema_decay 0.999``); ``--model`` merges a
mapping into the YAML's model overrides (``--model '{embed_dim: 96, depth: 6}'``), ``--data``
replaces the data list.

Outputs in ``out_dir`` (written by rank 0 only):

- ``ckpt.safetensors``: the model to use (the EMA weights when ``ema_decay > 0``) in our format
  (config inside, ``checkpoint.load_checkpoint`` reads it), metadata ``train_step``,
  ``train_config`` and ``eval_metrics`` (JSON);
- ``ckpt_raw.safetensors``: the online (non-EMA) weights, only when the EMA is on;
- ``train_state.pt``: optimizer state, step, elapsed time and RNG states (plain tensors and
  containers, loaded with ``torch.load(weights_only=True)``);
- ``log.jsonl``: one JSON object per line, ``{"kind": "train", "step": ..., "loss": ...}`` every
  ``log_interval`` steps and ``{"kind": "eval", "step": ..., "indoor": {...}, "outdoor": {...}}``.

A run whose ``out_dir`` holds ``train_state.pt`` resumes from it (``resume: true``): weights,
optimizer, step, elapsed time, data position and RNG continue where they stopped, so a run cut
into pieces equals an uninterrupted one. Data: see ``docs/TRAINING.md``; the losses:
``metric_solver_ros.losses``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import pathlib
import random
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: N817
from torch.utils.data import DataLoader, Dataset, Sampler

from metric_solver_ros.losses import LossWeights, metric_solver_loss
from metric_solver_ros.model import (
    MetricSolver,
    MetricSolverConfig,
    create_model,
    decode,
    get_config,
    parameter_groups,
)

# -----------------------------------------------------------------------------------------------
# The config block: defaults here, a YAML file over them, command-line overrides over that.


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in every checkpoint as ``train_config``).

    Attributes:
        out_dir: Output directory (checkpoints, ``log.jsonl``); resumed from if it holds a run.
        resume: Resume from ``out_dir/train_state.pt`` when it exists.
        init_from: ``scratch``; a Metric-Solver ``.safetensors`` checkpoint (fine-tuning; its
            config is used, updated by ``model``); or an official DINOv2 / Depth Anything V2
            ``.pth`` (loaded into a ``preset`` model with the checkpoint importers).
        log_interval: Print and log the training loss every N steps.
        eval_interval: Evaluate every N steps (and at the end); 0: only at the end.
        checkpoint_interval: Save every N steps (and at the end); 0: only at the end.
        eval_frames: Held-out synthetic frames per scene kind (indoor, outdoor); 0: no eval.
        eval_batch_size: Frames per evaluation forward pass.
        time_budget_s: Wall-clock budget [s] over all resumed pieces of the run (0: none); when
            spent, the run saves and stops cleanly.
        preset: Model preset ('tiny', 'vits', 'vitb', 'vitl', 'vitg').
        model: ``MetricSolverConfig`` overrides applied to the preset (or to the config of an
            ``init_from`` checkpoint), e.g. ``{embed_dim: 96, depth: 6, taps: []}``.
        data: Sources, each ``{source: synthetic | rgbd_folder | hypersim | vkitti2, weight: w,
            ...}``; synthetic takes ``kind`` (indoor, outdoor, mixed) and ``length`` (number of
            distinct scenes), the others ``root`` plus their reader's keyword arguments. Several
            sources are mixed per sample with probabilities proportional to ``weight``.
        image_size: Training image (H, W) [px], multiples of the patch size (14).
        augment: Random crop / flip / colour jitter of on-disk sources (synthetic scenes are
            already random).
        augment_scale_range: Zoom range of that augmentation; (1, 1) keeps the focal length,
            which a model without camera input needs to read metric scale.
        num_workers: DataLoader worker processes (0: load and render in the training process;
            pure-synthetic data is then rendered directly on the training device).
        scene_workers: With pure-synthetic data and ``num_workers: 0``: processes that lay out
            the scenes (Python/numpy, ~2 ms each on one core) while the device renders and
            trains; 0 lays them out in the training process, which bounded an H200 at ~180
            images/s (docs/TRAINING.md).
            The batches are the same for any value.
        anchor_sampling: ``pool``: one anchor drawn uniformly from the pool per image per step;
            ``fixed``: always ``fixed_anchor_m`` (the "fixed anchor" ablation).
        fixed_anchor_m: The anchor of ``anchor_sampling: fixed`` [m].
        batch_size: Images per process per micro-step.
        grad_accum_steps: Micro-steps per optimizer step (effective batch: batch_size x
            grad_accum_steps x processes).
        max_steps: Optimizer steps of the whole run.
        lr: Peak learning rate of the encoder (AdamW).
        head_lr_mult: Heads' and anchor pool's learning rate / encoder's.
        min_lr: Final encoder learning rate of the cosine decay.
        warmup_steps: Linear warmup steps.
        lr_decay_steps: Step at which the cosine reaches ``min_lr`` (0: ``max_steps``).
        schedule_by_time: With a ``time_budget_s``, advance the schedule by the larger of
            ``step / max_steps`` and ``elapsed / time_budget_s``: the cosine ends when the budget
            does even when the machine is slower than planned.
        weight_decay: AdamW weight decay of weight matrices and convolutions (none on norms,
            biases, LayerScale, tokens, positional embedding and the anchor pool).
        beta1: AdamW beta1.
        beta2: AdamW beta2.
        grad_clip: Clip the global gradient norm to this (0: off).
        ema_decay: Exponential moving average of the weights (0: off); the EMA is what gets
            evaluated and saved as ``ckpt.safetensors``.
        loss_weights: (near L2, far L2, mask BCE) weights, the paper's (1.0, 1.0, 0.05); a
            4th value weights the auxiliary SILog term on the fused depth (not in the paper;
            ``losses.py``), e.g. ``[1.0, 1.0, 0.05, 0.1]``.
        device: ``auto`` (``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``), ``cpu``,
            ``cuda``, ``cuda:N``.
        amp: Autocast dtype: ``auto`` (bf16 on GPUs with bf16 hardware, else off), ``bf16`` or
            ``off``.
        compile: ``torch.compile`` the model.
        num_threads: ``torch.set_num_threads`` for CPU runs (0: leave torch's default).
        seed: Seed of the initialisation, the data order and the anchors.
    """

    # I/O and logging
    out_dir: str = 'out/train'
    resume: bool = True
    init_from: str = 'scratch'
    log_interval: int = 10
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
    eval_frames: int = 16
    eval_batch_size: int = 8
    time_budget_s: float = 0.0
    # model
    preset: str = 'tiny'
    model: dict[str, Any] = field(default_factory=dict)
    # data
    data: list[dict[str, Any]] = field(
        default_factory=lambda: [{'source': 'synthetic', 'kind': 'mixed', 'weight': 1.0}])
    image_size: tuple[int, int] = (196, 252)
    augment: bool = True
    augment_scale_range: tuple[float, float] = (1.0, 1.0)
    num_workers: int = 0
    scene_workers: int = 0
    # anchors
    anchor_sampling: str = 'pool'
    fixed_anchor_m: float = 10.0
    # optimisation
    batch_size: int = 8
    grad_accum_steps: int = 1
    max_steps: int = 20000
    lr: float = 3e-4
    head_lr_mult: float = 10.0
    min_lr: float = 3e-5
    warmup_steps: int = 500
    lr_decay_steps: int = 0
    schedule_by_time: bool = False
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    loss_weights: tuple[float, ...] = (1.0, 1.0, 0.05)
    # system
    device: str = 'auto'
    amp: str = 'auto'
    compile: bool = False
    num_threads: int = 0
    seed: int = 1337

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
            (len(self.loss_weights) in (3, 4), 'loss_weights must be 3 or 4 numbers'),
            (len(self.augment_scale_range) == 2, 'augment_scale_range must be (lo, hi)'),
            (self.batch_size >= 1 and self.grad_accum_steps >= 1, 'batch sizes must be >= 1'),
            (self.max_steps >= 1, 'max_steps must be >= 1'),
            (self.lr > 0 and 0 <= self.min_lr <= self.lr, 'need lr > 0 and 0 <= min_lr <= lr'),
            (self.warmup_steps >= 0 and self.lr_decay_steps >= 0, 'step counts must be >= 0'),
            (0.0 <= self.ema_decay < 1.0, 'ema_decay must be in [0, 1)'),
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


DATA_SOURCES = ('synthetic', 'rgbd_folder', 'hypersim', 'vkitti2')


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


# -----------------------------------------------------------------------------------------------
# Building blocks: optimizer, EMA, data order, evaluation, checkpoints.

NO_DECAY_NAMES = ('pos_embed', 'cls_token', 'mask_token', 'register_tokens', 'anchor_pool.')
#: Optimizer settings that come from the config, not from a resumed optimizer's state.
OPTIMIZER_HYPERPARAMETERS = ('lr_mult', 'weight_decay', 'betas')
FROZEN_NAMES = ('pretrained.mask_token',)  # DINOv2's masked-modelling token: unused for depth


def configure_optimizer(model: MetricSolver, cfg: TrainConfig,
                        device_type: str) -> torch.optim.AdamW:
    """AdamW over 4 groups: (encoder | heads + anchor pool) x (decay | no decay).

    Each group carries ``lr_mult`` (1 for the encoder, ``head_lr_mult`` for the heads); the
    loop sets ``lr = get_lr(it) * lr_mult``. No weight decay on tensors with fewer than 2
    dimensions (biases, norms, LayerScale) nor on tokens, positional and anchor embeddings.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for group_name, params in parameter_groups(model):
        trainable = [p for p in params if p.requires_grad]
        no_decay = [p for p in trainable
                    if p.ndim < 2 or any(k in names[id(p)] for k in NO_DECAY_NAMES)]
        no_decay_ids = {id(p) for p in no_decay}
        decay = [p for p in trainable if id(p) not in no_decay_ids]
        mult = 1.0 if group_name == 'encoder' else cfg.head_lr_mult
        groups.append({'params': decay, 'weight_decay': cfg.weight_decay, 'lr_mult': mult,
                       'name': f'{group_name}_decay'})
        groups.append({'params': no_decay, 'weight_decay': 0.0, 'lr_mult': mult,
                       'name': f'{group_name}_no_decay'})
    fused = {'fused': True} if device_type == 'cuda' else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **fused)


def autocast_for(amp: str, device: torch.device) -> tuple[bool, Any]:
    """Whether ``amp`` means bf16 autocast on ``device``, and the context to run the network in.

    ``'bf16'``: always; ``'auto'``: on GPUs with bf16 hardware (``engine.native_bf16``:
    Ampere on; fp32 on older GPUs, where bf16 is emulated, and on the CPU); ``'off'``: never.
    """
    from metric_solver_ros.engine import native_bf16

    use_bf16 = amp == 'bf16' or (amp == 'auto' and native_bf16(device))
    ctx = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16 \
        else nullcontext()
    return use_bf16, ctx


class EMA:
    """Exponential moving average of a model's parameters (buffers copied).

    The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average towards ``model`` after optimizer step ``step``."""
        d = min(self.decay, (1 + step) / (10 + step))
        ema_params, params = list(self.model.parameters()), list(model.parameters())
        if len(ema_params) != len(params):
            raise ValueError('EMA and model parameters differ')
        # One multi-tensor kernel instead of ~300 launches (the tiny model); same values.
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def normalized_images(images: torch.Tensor, device: torch.device, mean: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:
    """A batch's images as network input.

    On ``device``, float, uint8 scaled to [0, 1], then normalised with the model's ``mean`` /
    ``std`` ([1, 3, 1, 1] tensors on ``device``).
    """
    x = images.to(device, non_blocking=True).float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    return (x - mean) / std


def sample_anchors(cfg: TrainConfig, pool_m: torch.Tensor, n: int, step: int, micro: int = 0,
                   rank: int = 0) -> torch.Tensor:
    """The ``n`` training anchors [m] of one micro-batch (CPU tensor).

    ``anchor_sampling: pool``: one per image, uniform over ``pool_m``, drawn from a generator
    seeded by (seed, step, micro-step, rank), so a resumed run draws what an uninterrupted one
    would; ``fixed``: ``fixed_anchor_m`` for all.
    """
    if cfg.anchor_sampling == 'pool':
        g = torch.Generator().manual_seed(
            int(np.random.SeedSequence([cfg.seed, step, micro, rank]).generate_state(1)[0]))
        return pool_m[torch.randint(len(pool_m), (n,), generator=g)]
    return torch.full((n,), cfg.fixed_anchor_m)


def loss_terms(model: torch.nn.Module, ctx: Any, images: torch.Tensor, depth_m: torch.Tensor,
               anchors_m: torch.Tensor, config: MetricSolverConfig, weights: LossWeights
               ) -> dict[str, torch.Tensor]:
    """Forward (in ``ctx``, e.g. bf16 autocast), then the loss and its terms in fp32.

    ``ctx`` comes from :func:`autocast_for`; the terms are those of
    :func:`losses.metric_solver_loss` (``loss``, ``loss_sn``, ``loss_tf``, ...).
    """
    with ctx:
        outputs = model(images, anchors_m, check_anchors=False)
    return metric_solver_loss(outputs, depth_m, anchors_m, config, weights)


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   ema: EMA | None, step: int) -> torch.Tensor:
    """Clip the gradients (``grad_clip``, 0: none), step, clear them, update the EMA.

    Returns:
        The gradient norm before clipping (a device tensor: no host sync).
    """
    grad_norm = torch.nn.utils.clip_grad_norm_(
        model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float('inf'))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.update(model, step)
    return grad_norm


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite, resumable batches of ``(epoch, index)``, sharded over DDP ranks.

    Local batch ``j`` of rank ``r`` is global batch ``g = j * world + r``, made of the sample
    positions ``g * B .. g * B + B - 1`` of one endless stream that walks through the dataset
    epoch after epoch (in a per-epoch random permutation when ``shuffle``). So the batches of all
    ranks are disjoint, and a run restarted at local batch ``start`` sees exactly the data an
    uninterrupted run would have.

    Args:
        length: Dataset length (items per epoch).
        batch_size: Items per batch.
        rank: This process's rank.
        world: Number of processes.
        seed: Seed of the permutations.
        shuffle: Permute each epoch (False: the identity, e.g. for the synthetic world whose
            items are random already).
        start: First local batch to yield.
    """

    def __init__(self, length: int, batch_size: int, rank: int, world: int, seed: int,
                 shuffle: bool, start: int = 0) -> None:
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self._perm: tuple[int, torch.Tensor] | None = None

    def _index(self, epoch: int, k: int) -> int:
        if not self.shuffle:
            return k
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.length, generator=g))
        return int(self._perm[1][k])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        j = self.start
        while True:
            g = j * self.world + self.rank
            batch = []
            for pos in range(g * self.batch_size, (g + 1) * self.batch_size):
                epoch, k = divmod(pos, self.length)
                batch.append((epoch, self._index(epoch, k)))
            yield batch
            j += 1


class EpochIndexed(Dataset):
    """Index a dataset with ``(epoch, index)``: sets the epoch (augmentation draw) per item."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        if hasattr(self.dataset, 'set_epoch') and getattr(self.dataset, 'epoch', None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class _SceneLayouts(Dataset):
    """A synthetic dataset's scene layouts, indexed ``(epoch, index)`` (for ``scene_workers``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.dataset.specs([key[1]])[0]

    def __len__(self) -> int:
        return len(self.dataset)


SYNTHETIC_LENGTH = 2**40  # "infinite": every training item is a new scene
MIX_LENGTH = 100_000  # items per epoch of a mixture (each item draws its source at random)


def _source_dataset(spec: dict[str, Any], cfg: TrainConfig, seed: int) -> Dataset:
    """Build one training dataset from a ``data`` entry (see ``TrainConfig.data``)."""
    from metric_solver_ros.data.augment import AugmentConfig
    from metric_solver_ros.data.datasets import FolderDataset, SyntheticDataset

    options = {k: v for k, v in spec.items() if k not in ('source', 'weight')}
    if spec['source'] == 'synthetic':
        return SyntheticDataset(kind=options.pop('kind', 'mixed'), size=cfg.image_size,
                                length=int(options.pop('length', SYNTHETIC_LENGTH)), seed=seed,
                                **options)
    module_name, class_name = {
        'rgbd_folder': ('rgbd_folder', 'RGBDFolder'),
        'hypersim': ('hypersim', 'Hypersim'),
        'vkitti2': ('vkitti2', 'VKITTI2'),
    }[spec['source']]
    import importlib

    module = importlib.import_module(f'metric_solver_ros.data.{module_name}')
    reader = getattr(module, class_name)(**options)
    augment_config = AugmentConfig(scale_range=cfg.augment_scale_range)
    return FolderDataset(reader, size=cfg.image_size, augment=cfg.augment, seed=seed,
                         config=augment_config)


def build_train_dataset(cfg: TrainConfig) -> tuple[Dataset, bool]:
    """Return the training dataset and whether its order should be shuffled per epoch."""
    from metric_solver_ros.data.datasets import MixedDataset

    datasets = [_source_dataset(spec, cfg, cfg.seed + 17 * i) for i, spec in enumerate(cfg.data)]
    if len(datasets) == 1:
        only = cfg.data[0]['source'] == 'synthetic'
        return datasets[0], not only
    weights = [float(spec.get('weight', 1.0)) for spec in cfg.data]
    return MixedDataset(datasets, weights, length=MIX_LENGTH, seed=cfg.seed), False


def train_batches(cfg: TrainConfig, rank: int, world: int, device: torch.device,
                  start: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches (``image`` [B,3,H,W] in [0, 1], ``depth_m`` [B,1,H,W]).

    Starts at local batch ``start`` (``step * grad_accum_steps`` on resume). Pure synthetic
    data with ``num_workers: 0`` is rendered directly on ``device`` (the GPU when training on
    one); everything else goes through a DataLoader with ``num_workers`` worker processes.
    """
    dataset, shuffle = build_train_dataset(cfg)
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, rank, world,  # type: ignore[arg-type]
                               cfg.seed, shuffle, start)
    if cfg.num_workers == 0 and hasattr(dataset, 'batch'):  # render on the training device
        if cfg.scene_workers == 0:
            for batch in sampler:
                yield dataset.batch([index for _, index in batch], device)
            return
        # Scene layouts from worker processes (a whole batch each, packed into arrays there:
        # unpickling 128 SceneSpec objects here took ~130 ms a batch and bound GPU training),
        # rendered here on the device.
        layouts = DataLoader(_SceneLayouts(dataset), batch_sampler=sampler,
                             num_workers=cfg.scene_workers, collate_fn=dataset.pack,
                             persistent_workers=True, prefetch_factor=2)
        for packed in layouts:
            yield dataset.render(packed, device)
        return
    loader = DataLoader(EpochIndexed(dataset), batch_sampler=sampler,
                        num_workers=cfg.num_workers, pin_memory=device.type == 'cuda',
                        persistent_workers=cfg.num_workers > 0,
                        prefetch_factor=4 if cfg.num_workers > 0 else None)
    yield from loader


EVAL_SETS: tuple[tuple[str, float, float], ...] = (('indoor', 10.0, 10.0),
                                                    ('outdoor', 80.0, 80.0))
"""(scene kind, anchor [m], evaluation cap [m]): the paper's 10 m indoor / 80 m outdoor."""
EVAL_SEED = 987_654_321
"""Seed of the held-out synthetic evaluation scenes (never a training seed)."""
SKY_FAR_M = 80.0
"""A sky pixel (GT +inf) counts as right when predicted beyond this [m] or +inf."""


def eval_frames(cfg: TrainConfig, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """Render the held-out evaluation scenes once: kind -> batch (CPU tensors)."""
    from metric_solver_ros.data.datasets import SyntheticDataset

    frames = {}
    for kind, _, _ in EVAL_SETS:
        dataset = SyntheticDataset(kind=kind, size=cfg.image_size, length=cfg.eval_frames,
                                   seed=EVAL_SEED)
        batch = dataset.batch(range(cfg.eval_frames), device)
        frames[kind] = {k: v.cpu() for k, v in batch.items()}
    return frames


@torch.no_grad()
def evaluate(model: MetricSolver, frames: dict[str, dict[str, torch.Tensor]],
             device: torch.device, ctx: Any, batch_size: int,
             sets: Sequence[tuple[str, float, float]] = EVAL_SETS) -> dict[str, dict[str, Any]]:
    """The paper's metrics per scene kind on the held-out frames (``metrics.MetricAggregator``).

    Each kind uses its anchor and cap (``sets``, default ``EVAL_SETS``; results are keyed by
    kind, or ``kind@anchor/cap`` when a kind appears more than once); predictions are brought
    to GT resolution
    with ``evaluation.to_gt_resolution``. Per kind: ``delta1/2/3``, ``abs_rel``, ``rmse`` [m],
    ``log10``, ``silog``, ``mask_accuracy`` (means over frames) and ``sky_far_fraction``: the
    share of sky GT pixels predicted beyond ``SKY_FAR_M`` or +inf (None without sky).
    """
    import cv2

    from metric_solver_ros.evaluation import Prediction, to_gt_resolution
    from metric_solver_ros.metrics import DEFAULT_MIN_DEPTH_M, MetricAggregator

    config = model.config
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    kinds = [kind for kind, _, _ in sets]
    for kind, anchor_m, cap_m in sets:
        if kind not in frames:
            continue
        name = kind if kinds.count(kind) == 1 else f'{kind}@{anchor_m:g}/{cap_m:g}'
        images, depths = frames[kind]['image'], frames[kind]['depth_m']
        aggregator = MetricAggregator(min_depth_m=DEFAULT_MIN_DEPTH_M, cap_m=cap_m,
                                      anchor_m=anchor_m)
        sky_right = sky_total = 0
        for lo in range(0, images.shape[0], batch_size):
            x = normalized_images(images[lo:lo + batch_size], device, mean, std)
            anchors = torch.full((x.shape[0],), anchor_m, device=device)
            with ctx:
                outputs = model(x, anchors, check_anchors=False)
            decoded = decode(outputs, anchors, config)
            pred = decoded['depth_m'][:, 0].cpu().numpy()
            near = decoded['near'][:, 0].cpu().numpy()
            for i in range(pred.shape[0]):
                gt = depths[lo + i, 0].numpy()
                resized = to_gt_resolution(Prediction(pred[i], near[i], anchor_m), gt.shape,
                                           DEFAULT_MIN_DEPTH_M, cap_m)
                aggregator.add(resized.depth_m, gt, resized.near)
                sky = np.isposinf(gt)
                if sky.any():
                    raw = cv2.resize(pred[i], (gt.shape[1], gt.shape[0]),
                                     interpolation=cv2.INTER_NEAREST)
                    sky_right += int(np.count_nonzero(raw[sky] > SKY_FAR_M))
                    sky_total += int(np.count_nonzero(sky))
        metrics = aggregator.frame_mean()
        metrics['sky_far_fraction'] = sky_right / sky_total if sky_total else None
        metrics['anchor_m'], metrics['cap_m'] = anchor_m, cap_m
        results[name] = metrics
    model.train(was_training)
    return results


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every state-dict tensor (sorted keys): equal digests = identical weights."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                 .tobytes())
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    """RNG states as plain tensors / containers (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        'torch': torch.get_rng_state(),
        'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        'python': random.getstate(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state['torch'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_state(out_dir: pathlib.Path, raw_model: MetricSolver, ema: EMA | None,
               optimizer: torch.optim.Optimizer, step: int, elapsed_s: float, cfg: TrainConfig,
               metrics: dict[str, Any] | None) -> None:
    """Write ``ckpt.safetensors`` (+ ``ckpt_raw.safetensors`` with EMA) and ``train_state.pt``.

    Every file is written to a temporary name and renamed, model files first, so an
    interruption leaves the previous complete state or a newer model with the older state
    (detected on resume by the step stored in both).
    """
    from metric_solver_ros.checkpoint import save_checkpoint

    meta = {'train_step': str(step), 'train_config': json.dumps(asdict(cfg)),
            'eval_metrics': json.dumps(metrics or {})}
    if ema is not None:
        save_checkpoint(out_dir / 'ckpt_raw.safetensors', raw_model, meta)
    else:  # no stale online weights from an earlier run with EMA
        (out_dir / 'ckpt_raw.safetensors').unlink(missing_ok=True)
    save_checkpoint(out_dir / 'ckpt.safetensors', ema.model if ema else raw_model, meta)
    state = {'step': step, 'elapsed_s': elapsed_s, 'optimizer': optimizer.state_dict(),
             'rng': _rng_state(), 'train_config': asdict(cfg)}
    tmp = out_dir / 'train_state.pt.tmp'
    torch.save(state, tmp)
    os.replace(tmp, out_dir / 'train_state.pt')


#: Settings that make a run what it is: resuming with others would silently ignore them.
RUN_DEFINING_FIELDS = ('init_from', 'preset', 'model', 'data')


def check_resumable(saved: dict[str, Any], cfg: TrainConfig, out_dir: pathlib.Path) -> None:
    """Refuse to resume the run in ``out_dir`` when ``cfg`` asks for a different run.

    Args:
        saved: The ``train_config`` stored in the run's ``train_state.pt`` (``asdict`` form).
        cfg: This invocation's config.
        out_dir: The run directory (for the message).

    Raises:
        ValueError: A field of ``RUN_DEFINING_FIELDS`` differs (the saved weights, not
            ``init_from`` / ``preset`` / ``model``, would be trained, on the saved ``data``
            stream's position).
    """
    def canonical(name: str, value: Any) -> str:  # 1 and 1.0, a/b and ./a/b: the same
        plain = json.loads(json.dumps(value, default=str), parse_int=float)
        if name == 'init_from' and plain != 'scratch':
            plain = os.path.abspath(plain)
        return json.dumps(plain, sort_keys=True)

    now = asdict(cfg)
    changed = [f'{name}: {json.dumps(saved[name], default=str)} in the run, '
               f'{json.dumps(now[name], default=str)} now' for name in RUN_DEFINING_FIELDS
               if name in saved and canonical(name, saved[name]) != canonical(name, now[name])]
    if changed:
        lines = '\n  '.join(changed)
        raise ValueError(f'{out_dir} holds a run with other settings, which resuming would '
                         f'keep:\n  {lines}\nUse another out_dir (or --resume false to overwrite '
                         f'it); to fine-tune from that run: --init_from '
                         f'{out_dir / "ckpt.safetensors"} with a new out_dir.')


def check_image_size(cfg: TrainConfig, patch_size: int) -> None:
    """Raise ValueError unless ``image_size`` is made of multiples of the model's patch size."""
    if any(v % patch_size for v in cfg.image_size):
        raise ValueError(f'image_size {tuple(cfg.image_size)} must be multiples of the patch '
                         f'size {patch_size} px')


def init_model(cfg: TrainConfig) -> tuple[MetricSolver, str]:
    """Build the model of ``cfg.init_from`` (on CPU, float32); return it and a description."""
    from metric_solver_ros.checkpoint import (
        CheckpointError,
        import_official,
        load_checkpoint,
        load_official_state_dict,
        read_checkpoint_config,
        read_checkpoint_metadata,
    )

    # A new model infers at the training resolution unless `model` says otherwise (checked
    # first: a bad image_size would otherwise be reported as a bad input_size).
    overrides = {'input_size': tuple(cfg.image_size), **cfg.model}
    if cfg.init_from == 'scratch':
        check_image_size(cfg, get_config(cfg.preset, **cfg.model).patch_size)
        return create_model(get_config(cfg.preset, **overrides)), 'scratch'
    path = pathlib.Path(cfg.init_from)
    if not path.is_file():
        raise FileNotFoundError(f'init_from: {path}: no such file')
    try:
        config = read_checkpoint_config(path)
    except CheckpointError:
        config = None
    if config is not None:  # a Metric-Solver checkpoint: fine-tuning
        source = load_checkpoint(path)
        if 'train_step' not in read_checkpoint_metadata(path):
            # never trained (`metric-solver convert` output): a new model, like official weights
            check_image_size(cfg, config.patch_size)
            config = config.replace(input_size=tuple(cfg.image_size))
        model = create_model(config.replace(**cfg.model) if cfg.model else config)
        model.load_state_dict(source.state_dict(), strict=True)
        return model, f'Metric-Solver checkpoint {path}'
    check_image_size(cfg, get_config(cfg.preset, **cfg.model).patch_size)
    try:
        model, report, kind = import_official(load_official_state_dict(path), cfg.preset,
                                              **overrides)
    except CheckpointError as error:
        raise ValueError(f'init_from {path}: {error}') from None
    return model, f'{kind} weights {path}\n{report.format()}'


# -----------------------------------------------------------------------------------------------
# The training run.


def train(cfg: TrainConfig) -> dict[str, Any]:  # noqa: C901 - one loop that reads top to bottom
    """Run (or resume) training as configured; return a summary (rank 0's view).

    Returns:
        ``step`` (optimizer steps done), ``stopped_by`` (``max_steps`` or ``time_budget``),
        ``metrics`` (last evaluation, per kind), ``losses`` (``(step, loss)`` of each log line of
        this invocation), ``steps_per_s`` and ``elapsed_s`` (whole run, all pieces).
    """
    # ---- processes and devices: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE
    ddp = int(os.environ.get('WORLD_SIZE', '1')) > 1
    rank = int(os.environ.get('RANK', '0'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if cfg.device == 'auto':
        device = torch.device(f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu')
    else:
        device = torch.device(cfg.device)
        if device.type == 'cuda' and device.index is None:
            device = torch.device('cuda', local_rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if ddp:
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    master = rank == 0
    threads_before = torch.get_num_threads()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    use_bf16, ctx = autocast_for(cfg.amp, device)
    out_dir = pathlib.Path(cfg.out_dir)
    log_path = out_dir / 'log.jsonl'

    def log(record: dict[str, Any], line: str) -> None:
        if master:
            print(line, flush=True)
            with open(log_path, 'a') as f:
                f.write(json.dumps(record) + '\n')

    # ---- model: resume > init_from (scratch / Metric-Solver checkpoint / official weights)
    from metric_solver_ros.checkpoint import load_checkpoint, read_checkpoint_metadata

    torch.manual_seed(cfg.seed)
    state_path = out_dir / 'train_state.pt'
    resuming = cfg.resume and state_path.is_file()
    if master:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resuming:
            log_path.unlink(missing_ok=True)  # a new run: a new log
    state: dict[str, Any] = {}
    ema: EMA | None = None
    if resuming:  # the online weights: ckpt_raw when the run kept an EMA, else ckpt
        state = torch.load(state_path, map_location='cpu', weights_only=True)
        check_resumable(state.get('train_config', {}), cfg, out_dir)
        raw_path = out_dir / 'ckpt_raw.safetensors'
        raw_path = raw_path if raw_path.is_file() else out_dir / 'ckpt.safetensors'
        model = load_checkpoint(raw_path)
        saved_step = int(read_checkpoint_metadata(raw_path).get('train_step', -1))
        if saved_step != state['step']:
            raise ValueError(f'{out_dir}: model (step {saved_step}) and train_state.pt (step '
                             f'{state["step"]}) disagree; the last save was interrupted')
        origin = f'resumed from {out_dir} at step {state["step"]}'
    else:
        model, origin = init_model(cfg)
    for name, p in model.named_parameters():
        if name in FROZEN_NAMES:
            p.requires_grad_(False)
    model.to(device).train()
    if cfg.ema_decay > 0:
        ema = EMA(model, cfg.ema_decay)
        if resuming:
            ema.model.load_state_dict(load_checkpoint(out_dir / 'ckpt.safetensors').state_dict())
    raw_model = model
    config = raw_model.config
    if cfg.anchor_sampling == 'fixed':
        raw_model.anchor_pool.validate([cfg.fixed_anchor_m])
    check_image_size(cfg, config.patch_size)  # (also for a resumed or fine-tuned model)
    if master and min(cfg.image_size) != min(config.input_size):
        print(f'warning: training images have a short side of {min(cfg.image_size)} px, the '
              f"model's input_size {tuple(config.input_size)} infers at {min(config.input_size)}"
              f' px: the network sees other focal lengths [px] at inference than in training, '
              f'which biases metric depth; set model.input_size to image_size', flush=True)

    # ---- optimizer (after the model is on its device), then DDP / compile
    optimizer = configure_optimizer(raw_model, cfg, device.type)
    if resuming:
        # load_state_dict also restores each group's hyper-parameters: keep this run's config
        configured = [{k: g[k] for k in OPTIMIZER_HYPERPARAMETERS} for g in optimizer.param_groups]
        optimizer.load_state_dict(state['optimizer'])
        for group, values in zip(optimizer.param_groups, configured, strict=True):
            group.update(values)
        _set_rng_state(state['rng'])
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == 'cuda' else None)
    weights = LossWeights(*cfg.loss_weights)
    pool_m = torch.tensor(config.anchor_pool_m, dtype=torch.float32)
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)

    # ---- data: an endless, resumable stream; the held-out evaluation scenes
    step = int(state.get('step', 0))
    if ddp:  # e.g. several nodes without a shared out_dir: only some would find the state
        bounds = [torch.tensor([float(step)], dtype=torch.float64, device=device)
                  for _ in range(2)]
        dist.all_reduce(bounds[0], op=dist.ReduceOp.MIN)
        dist.all_reduce(bounds[1], op=dist.ReduceOp.MAX)
        if bounds[0].item() != bounds[1].item():
            raise RuntimeError(f'rank {rank}: the processes start at steps '
                               f'{int(bounds[0].item())}..{int(bounds[1].item())}; every rank '
                               f'must see the same {state_path} (put out_dir on a shared '
                               f'filesystem)')
    batches = train_batches(cfg, rank, world, device, start=step * cfg.grad_accum_steps)
    frames = eval_frames(cfg, device) if master and cfg.eval_frames > 0 else {}
    n_params = sum(p.numel() for p in raw_model.parameters())
    log({'kind': 'start', 'step': step, 'origin': origin.splitlines()[0], 'params': n_params,
         'world': world, 'device': str(device), 'bf16': use_bf16, 'config': asdict(cfg)},
        f'{origin}\nmodel {config.preset}: {n_params / 1e6:.2f} M parameters | {world} '
        f'process(es) on {device} | bf16 autocast {use_bf16} | effective batch '
        f'{cfg.batch_size * cfg.grad_accum_steps * world} | {cfg.max_steps} steps')

    # ---- the loop. `elapsed` is agreed by all ranks (rank clocks differ: under DDP with
    # schedule_by_time, each rank's own clock would give it its own learning rate and the weights
    # would drift apart), measured after each step and used by the next.
    elapsed_before = float(state.get('elapsed_s', 0.0))
    elapsed = elapsed_before
    t_start = time.time()
    t_log, step_log = time.time(), step
    losses: list[tuple[int, float]] = []
    metrics: dict[str, Any] = {}
    stopped_by = 'max_steps'
    window: dict[str, torch.Tensor] = {}
    while step < cfg.max_steps:
        # learning rate of this step (optionally following the wall-clock budget)
        progress = float(step)
        if cfg.schedule_by_time and cfg.time_budget_s > 0:
            progress = max(progress, cfg.max_steps * elapsed / cfg.time_budget_s)
        lr = get_lr(progress, cfg)
        for group in optimizer.param_groups:
            group['lr'] = lr * group['lr_mult']

        # forward / backward over the micro-steps, gradients synchronised on the last one
        for micro in range(cfg.grad_accum_steps):
            batch = next(batches)
            images = normalized_images(batch['image'], device, mean, std)
            depth_m = batch['depth_m'].to(device, non_blocking=True)
            anchors_m = sample_anchors(cfg, pool_m, images.shape[0], step, micro, rank).to(device)
            skip_sync = ddp and micro < cfg.grad_accum_steps - 1
            with model.no_sync() if skip_sync else nullcontext():  # type: ignore[operator]
                terms = loss_terms(model, ctx, images, depth_m, anchors_m, config, weights)
                (terms['loss'] / cfg.grad_accum_steps).backward()
            for key, value in terms.items():
                value = value.detach() / cfg.grad_accum_steps
                window[key] = window[key] + value if key in window else value
        grad_norm = optimizer_step(raw_model, optimizer, cfg, ema, step)
        step += 1

        # stop on the wall-clock budget: every rank must stop at the same step
        elapsed = elapsed_before + time.time() - t_start
        if ddp and cfg.time_budget_s > 0:  # the slowest rank's clock, for all
            agreed = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            elapsed = float(agreed.item())
        over_budget = cfg.time_budget_s > 0 and elapsed >= cfg.time_budget_s
        if over_budget:
            stopped_by = 'time_budget'
        done = step >= cfg.max_steps or over_budget

        # log (rank 0's loss; the .item() calls are the only host syncs of the loop)
        if step % cfg.log_interval == 0 or done:
            steps = step - step_log
            mean_terms = {k: v.item() / max(steps, 1) for k, v in window.items()}
            window = {}
            dt = time.time() - t_log
            t_log, step_log = time.time(), step
            if not math.isfinite(mean_terms['loss']):
                raise FloatingPointError(f'step {step}: loss is {mean_terms["loss"]}; lower lr '
                                         f'or check the data')
            losses.append((step, mean_terms['loss']))
            rate = steps / dt if dt > 0 else 0.0
            log({'kind': 'train', 'step': step, **mean_terms, 'lr': lr,
                 'grad_norm': float(grad_norm), 'steps_per_s': rate,
                 'images_per_s': rate * cfg.batch_size * cfg.grad_accum_steps * world,
                 'elapsed_s': elapsed},
                f'step {step:6d} | loss {mean_terms["loss"]:.4f} (sn {mean_terms["loss_sn"]:.4f} '
                f'tf {mean_terms["loss_tf"]:.4f} mask {mean_terms["loss_mask"]:.4f}'
                + (f' silog {mean_terms["loss_silog"]:.4f}' if weights.silog > 0 else '')
                + f') | lr '
                f'{lr:.2e} | grad {float(grad_norm):.2f} | {rate:.2f} steps/s | '
                f'{elapsed / 60:.1f} min')

        # evaluate and save (rank 0; the others go on and wait in the next all-reduce)
        if master and frames and ((cfg.eval_interval and step % cfg.eval_interval == 0) or done):
            metrics = evaluate(ema.model if ema else raw_model, frames, device, ctx,
                               cfg.eval_batch_size)
            log({'kind': 'eval', 'step': step, **metrics}, f'eval step {step} | ' + ' | '.join(
                f'{kind} d1 {_fmt(m["delta1"])} absrel {_fmt(m["abs_rel"])} rmse '
                f'{_fmt(m["rmse"])} mask {_fmt(m.get("mask_accuracy"))}'
                + (f' sky {_fmt(m["sky_far_fraction"])}' if m['sky_far_fraction'] is not None
                   else '') for kind, m in metrics.items()))
        if master and ((cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0)
                       or done):
            save_state(out_dir, raw_model, ema, optimizer, step,
                       elapsed_before + time.time() - t_start, cfg, metrics)
        if done:
            break

    # ---- the end: every rank reports its weights' digest (identical under DDP)
    elapsed = elapsed_before + time.time() - t_start
    # One write for the whole line: with PYTHONUNBUFFERED, print() writes the text and the newline
    # separately, and the ranks' lines interleave between the two on a shared stdout.
    sys.stdout.write(f'[rank {rank}] step {step} param_digest {param_digest(raw_model)}\n')
    sys.stdout.flush()
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    torch.set_num_threads(threads_before)
    done_steps = step - int(state.get('step', 0))
    return {'step': step, 'stopped_by': stopped_by, 'metrics': metrics, 'losses': losses,
            'steps_per_s': done_steps / max(time.time() - t_start, 1e-9), 'elapsed_s': elapsed,
            'out_dir': str(out_dir)}


def _fmt(value: float | None) -> str:
    return 'n/a' if value is None else f'{value:.3f}'


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m metric_solver_ros.train`` / torchrun (see module docstring)."""
    from metric_solver_ros.commands import train as command

    parser = argparse.ArgumentParser(prog='python -m metric_solver_ros.train',
                                     description='Train Metric-Solver.')
    command.add_arguments(parser)
    return command.run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
