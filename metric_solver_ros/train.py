r"""Train Metric-Solver (paper Sec. 3.3 and 4.1). Reads top to bottom, nanoGPT style.

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
into pieces equals an uninterrupted one.

Here: the optimizer, the EMA, autocast, the step, the evaluation and the loop. Around it:
``train_config`` (``TrainConfig``, ``load_config``, ``get_lr``; no torch), ``train_data`` (the
resumable batch stream, the evaluation scenes), ``train_state`` (checkpoints, resume checks, RNG
state, ``init_model``) and ``losses``. Data: see ``docs/TRAINING.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: N817

from metric_solver_ros.losses import LossWeights, metric_solver_loss
from metric_solver_ros.model import MetricSolver, MetricSolverConfig, decode, parameter_groups
from metric_solver_ros.runtime_options import native_bf16
from metric_solver_ros.train_config import (
    TrainConfig,
    add_config_arguments,
    config_from_args,
    get_lr,
    schedule_position,
)
from metric_solver_ros.train_data import EVAL_SETS, eval_frames, train_batches
from metric_solver_ros.train_state import (
    CKPT_FILE,
    STATE_FILE,
    check_image_size,
    init_model,
    load_run,
    param_digest,
    save_state,
    set_rng_state,
)

# -----------------------------------------------------------------------------------------------
# Building blocks: optimizer, autocast, EMA, the training step, evaluation.

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


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a resumed run's optimizer state, keeping this run's ``OPTIMIZER_HYPERPARAMETERS``.

    ``load_state_dict`` also restores each group's hyper-parameters; a resumed run may change
    ``lr``, ``head_lr_mult``, ``weight_decay`` or the betas.
    """
    configured = [{k: g[k] for k in OPTIMIZER_HYPERPARAMETERS} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, values in zip(optimizer.param_groups, configured, strict=True):
        group.update(values)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set each parameter group to ``lr`` times its ``lr_mult`` (1, or ``head_lr_mult``)."""
    for group in optimizer.param_groups:
        group['lr'] = lr * group['lr_mult']


def autocast_for(amp: str, device: torch.device) -> tuple[bool, Any]:
    """Whether ``amp`` means bf16 autocast on ``device``, and the context to run the network in.

    ``'bf16'``: always; ``'auto'``: on GPUs with bf16 hardware
    (``runtime_options.native_bf16``: Ampere on; fp32 on older GPUs, where bf16 is emulated, and
    on the CPU); ``'off'``: never.
    """
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


def input_normalization(config: MetricSolverConfig,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's ``(mean, std)`` as [1, 3, 1, 1] tensors on ``device``."""
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    return mean, std


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


def training_pool(cfg: TrainConfig, pool_m: torch.Tensor) -> torch.Tensor:
    """The pool anchors [m] that ``pool`` sampling draws from: those <= ``anchor_max_m``.

    Raises:
        ValueError: ``anchor_max_m`` is below every pool anchor.
    """
    if cfg.anchor_max_m <= 0:
        return pool_m
    kept = pool_m[pool_m <= cfg.anchor_max_m]
    if len(kept) == 0:
        raise ValueError(f'anchor_max_m {cfg.anchor_max_m:g} m is below every pool anchor '
                         f'({", ".join(f"{a:g}" for a in pool_m.tolist())} m)')
    return kept


def sample_anchors(cfg: TrainConfig, pool_m: torch.Tensor, n: int, step: int, micro: int = 0,
                   rank: int = 0) -> torch.Tensor:
    """The training anchors [m] of one micro-batch of ``n`` images (CPU tensor).

    ``anchor_sampling: pool``: one per image, uniform over ``pool_m`` (its anchors up to
    ``anchor_max_m``: :func:`training_pool`), drawn from a generator seeded by (seed, step,
    micro-step, rank), so a resumed run draws what an uninterrupted one would; ``fixed``:
    ``fixed_anchor_m`` for all. With the consistency term on (a 5th loss weight > 0) every
    image gets a second, different pool anchor: ``2 n`` anchors, the first ``n`` as without it
    (``MetricSolver.decode`` then decodes each image twice).
    """
    if cfg.anchor_sampling != 'pool':
        return torch.full((n,), cfg.fixed_anchor_m)
    pool_m = training_pool(cfg, pool_m)
    g = torch.Generator().manual_seed(
        int(np.random.SeedSequence([cfg.seed, step, micro, rank]).generate_state(1)[0]))
    first = torch.randint(len(pool_m), (n,), generator=g)
    if LossWeights(*cfg.loss_weights).consistency <= 0 or len(pool_m) < 2:
        return pool_m[first]
    second = (first + torch.randint(1, len(pool_m), (n,), generator=g)) % len(pool_m)
    return pool_m[torch.cat([first, second])]


def loss_terms(model: torch.nn.Module, ctx: Any, images: torch.Tensor, depth_m: torch.Tensor,
               anchors_m: torch.Tensor, config: MetricSolverConfig, weights: LossWeights,
               label_cap_m: float = 0.0) -> dict[str, torch.Tensor]:
    """Forward (in ``ctx``, e.g. bf16 autocast), then the loss and its terms in fp32.

    ``ctx`` comes from :func:`autocast_for`; the terms are those of
    :func:`losses.metric_solver_loss` (``loss``, ``loss_sn``, ``loss_tf``, ...), with depths
    >= ``label_cap_m`` [m] taken as lower bounds (0: none).
    """
    with ctx:
        outputs = model(images, anchors_m, check_anchors=False)
    return metric_solver_loss(outputs, depth_m, anchors_m, config, weights, label_cap_m)


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


@torch.no_grad()
def evaluate(model: MetricSolver, frames: dict[str, dict[str, torch.Tensor]],
             device: torch.device, ctx: Any, batch_size: int,
             sets: Sequence[tuple[str, float, float]] = EVAL_SETS) -> dict[str, dict[str, Any]]:
    """The paper's metrics per scene kind on the held-out frames (``metrics.MetricAggregator``).

    Each kind uses its anchor and cap (``sets``, default ``EVAL_SETS``; results are keyed by
    kind, or ``kind@anchor/cap`` when a kind appears more than once); predictions are brought
    to GT resolution with ``evaluation.to_gt_resolution``. Per kind: ``delta1/2/3``,
    ``abs_rel``, ``rmse`` [m], ``log10``, ``silog``, ``mask_accuracy`` (means over frames),
    ``sky_far_fraction``: the share of sky GT pixels predicted beyond
    ``anchor_metrics.SKY_FAR_M`` or +inf (None without sky), and ``scale_spread`` /
    ``pixel_log_spread`` over ``anchor_metrics.CONSISTENCY_ANCHORS_M`` of the kind (within the
    pool; see ``anchor_metrics``). The encoder runs once per batch for all anchors.
    """
    from metric_solver_ros.anchor_metrics import (
        CONSISTENCY_ANCHORS_M,
        AnchorConsistency,
        FarDecisions,
    )
    from metric_solver_ros.evaluation import Prediction, nearest_to_shape, to_gt_resolution
    from metric_solver_ros.metrics import DEFAULT_MIN_DEPTH_M, MetricAggregator

    config = model.config
    lo_m, hi_m = config.pool_range_m
    mean, std = input_normalization(config, device)
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
        far = FarDecisions(min_depth_m=DEFAULT_MIN_DEPTH_M)
        consistency = AnchorConsistency(min_depth_m=DEFAULT_MIN_DEPTH_M, cap_m=cap_m)
        spread_anchors = [a for a in CONSISTENCY_ANCHORS_M.get(kind, ()) if lo_m <= a <= hi_m]
        for lo in range(0, images.shape[0], batch_size):
            x = normalized_images(images[lo:lo + batch_size], device, mean, std)
            patch_hw = (x.shape[-2] // config.patch_size, x.shape[-1] // config.patch_size)
            with ctx:
                features = model.encode(x)
            by_anchor = {}
            for a in dict.fromkeys([anchor_m, *spread_anchors]):
                anchors = torch.full((x.shape[0],), a, device=device)
                with ctx:
                    outputs = model.decode(features, anchors, patch_hw, check_anchors=False)
                decoded = decode(outputs, anchors, config)
                by_anchor[a] = (decoded['depth_m'][:, 0].cpu().numpy(),
                                decoded['near'][:, 0].cpu().numpy())
            pred, near = by_anchor[anchor_m]
            for i in range(pred.shape[0]):
                gt = depths[lo + i, 0].numpy()
                resized = to_gt_resolution(Prediction(pred[i], near[i], anchor_m), gt.shape,
                                           DEFAULT_MIN_DEPTH_M, cap_m)
                aggregator.add(resized.depth_m, gt, resized.near)
                far.add(nearest_to_shape(pred[i], gt.shape), gt)
                if len(spread_anchors) >= 2:
                    consistency.add({a: to_gt_resolution(
                        Prediction(by_anchor[a][0][i]), gt.shape, DEFAULT_MIN_DEPTH_M,
                        cap_m).depth_m for a in spread_anchors}, gt)
        metrics = aggregator.frame_mean()
        metrics['sky_far_fraction'] = far.summary()['sky_beyond_far']
        spread = consistency.summary()
        metrics['scale_spread'] = spread['scale_spread']
        metrics['pixel_log_spread'] = spread['pixel_log_spread']
        metrics['anchor_m'], metrics['cap_m'] = anchor_m, cap_m
        results[name] = metrics
    model.train(was_training)
    return results


def _fmt(value: float | None) -> str:
    return 'n/a' if value is None else f'{value:.3f}'


# -----------------------------------------------------------------------------------------------
# The parts of a run: processes, log, model, and the loop's bookkeeping.


@dataclass(frozen=True)
class Processes:
    """This process's place in the run (torchrun sets ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE``).

    Attributes:
        rank: Global rank; rank 0 logs, evaluates and saves.
        world: Number of processes.
        device: This process's device.
    """

    rank: int
    world: int
    device: torch.device

    @property
    def ddp(self) -> bool:
        """Whether the run is distributed (more than one process)."""
        return self.world > 1

    @property
    def master(self) -> bool:
        """Whether this process logs, evaluates and saves (rank 0)."""
        return self.rank == 0


def start_processes(cfg: TrainConfig) -> Processes:
    """Pick this process's device (``cuda:LOCAL_RANK`` for ``auto``) and join the DDP group."""
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
    procs = Processes(rank, world, device)
    if procs.ddp:
        dist.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo')
    return procs


class RunLog:
    """Stdout and ``out_dir/log.jsonl``, written by rank 0 only (elsewhere calls do nothing).

    Args:
        out_dir: The run directory (created by rank 0).
        master: Whether this process is rank 0.
        new_run: Start a new log (False: a resumed run appends to its log).
    """

    def __init__(self, out_dir: pathlib.Path, master: bool, new_run: bool) -> None:
        self.path = out_dir / 'log.jsonl'
        self.master = master
        if master:
            out_dir.mkdir(parents=True, exist_ok=True)
            if new_run:
                self.path.unlink(missing_ok=True)

    def __call__(self, record: dict[str, Any], line: str) -> None:
        """Print ``line`` and append ``record`` to the log as one JSON line."""
        if self.master:
            print(line, flush=True)
            with open(self.path, 'a') as f:
                f.write(json.dumps(record) + '\n')

    def start(self, step: int, origin: str, model: MetricSolver, cfg: TrainConfig,
              procs: Processes, use_bf16: bool) -> None:
        """The ``start`` record: where the model comes from, its size, the processes, the config."""
        n_params = sum(p.numel() for p in model.parameters())
        world, device = procs.world, procs.device
        self({'kind': 'start', 'step': step, 'origin': origin.splitlines()[0],
              'params': n_params, 'world': world, 'device': str(device), 'bf16': use_bf16,
              'config': asdict(cfg)},
             f'{origin}\nmodel {model.config.preset}: {n_params / 1e6:.2f} M parameters | '
             f'{world} process(es) on {device} | bf16 autocast {use_bf16} | effective batch '
             f'{cfg.batch_size * cfg.grad_accum_steps * world} | {cfg.max_steps} steps')

    def train_step(self, step: int, terms: dict[str, float], lr: float, grad_norm: float,
                   rate: float, elapsed_s: float, cfg: TrainConfig, world: int) -> None:
        """A ``train`` record: mean loss terms, ``lr``, rate [steps/s], ``elapsed_s`` [s]."""
        weights = LossWeights(*cfg.loss_weights)
        self({'kind': 'train', 'step': step, **terms, 'lr': lr, 'grad_norm': grad_norm,
              'steps_per_s': rate,
              'images_per_s': rate * cfg.batch_size * cfg.grad_accum_steps * world,
              'elapsed_s': elapsed_s},
             f'step {step:6d} | loss {terms["loss"]:.4f} (sn {terms["loss_sn"]:.4f} '
             f'tf {terms["loss_tf"]:.4f} mask {terms["loss_mask"]:.4f}'
             + (f' silog {terms["loss_silog"]:.4f}' if weights.silog > 0 else '')
             + (f' consistency {terms["loss_consistency"]:.4f}' if weights.consistency > 0
                else '')
             + f') | lr {lr:.2e} | grad {grad_norm:.2f} | {rate:.2f} steps/s | '
             f'{elapsed_s / 60:.1f} min')

    def evaluation(self, step: int, metrics: dict[str, dict[str, Any]]) -> None:
        """An ``eval`` record: :func:`evaluate`'s metrics per kind."""
        self({'kind': 'eval', 'step': step, **metrics}, f'eval step {step} | ' + ' | '.join(
            f'{kind} d1 {_fmt(m["delta1"])} absrel {_fmt(m["abs_rel"])} rmse '
            f'{_fmt(m["rmse"])} mask {_fmt(m.get("mask_accuracy"))}'
            + (f' sky {_fmt(m["sky_far_fraction"])}' if m['sky_far_fraction'] is not None
               else '')
            + (f' spread {_fmt(m["scale_spread"])}' if m.get('scale_spread') is not None
               else '') for kind, m in metrics.items()))


def prepare_model(model: MetricSolver, cfg: TrainConfig, device: torch.device,
                  resume_dir: pathlib.Path | None, master: bool) -> EMA | None:
    """Freeze ``FROZEN_NAMES``, put ``model`` on ``device`` in train mode; return its EMA.

    The EMA (None when ``ema_decay`` is 0) of a resumed run (``resume_dir``) continues from the
    run's ``ckpt.safetensors``. The anchors and the image size are checked against the model
    (also a resumed or fine-tuned one); rank 0 warns when the training images' short side is
    not the one the model infers at.
    """
    from metric_solver_ros.checkpoint import load_checkpoint

    for name, p in model.named_parameters():
        if name in FROZEN_NAMES:
            p.requires_grad_(False)
    model.to(device).train()
    ema = None
    if cfg.ema_decay > 0:
        ema = EMA(model, cfg.ema_decay)
        if resume_dir is not None:
            ema.model.load_state_dict(load_checkpoint(resume_dir / CKPT_FILE).state_dict())
    config = model.config
    if cfg.anchor_sampling == 'fixed':
        model.anchor_pool.validate([cfg.fixed_anchor_m])
    else:
        training_pool(cfg, torch.tensor(config.anchor_pool_m))
    check_image_size(cfg, config.patch_size)
    if master and min(cfg.image_size) != min(config.input_size):
        print(f'warning: training images have a short side of {min(cfg.image_size)} px, the '
              f"model's input_size {tuple(config.input_size)} infers at {min(config.input_size)}"
              f' px: the network sees other focal lengths [px] at inference than in training, '
              f'which biases metric depth; set model.input_size to image_size', flush=True)
    return ema


def check_same_start(step: int, procs: Processes, state_path: pathlib.Path) -> None:
    """Under DDP, raise RuntimeError unless every rank starts at ``step``.

    E.g. several nodes without a shared ``out_dir``: only some would find the state to resume.
    """
    if not procs.ddp:
        return
    bounds = [torch.tensor([float(step)], dtype=torch.float64, device=procs.device)
              for _ in range(2)]
    dist.all_reduce(bounds[0], op=dist.ReduceOp.MIN)
    dist.all_reduce(bounds[1], op=dist.ReduceOp.MAX)
    if bounds[0].item() != bounds[1].item():
        raise RuntimeError(f'rank {procs.rank}: the processes start at steps '
                           f'{int(bounds[0].item())}..{int(bounds[1].item())}; every rank '
                           f'must see the same {state_path} (put out_dir on a shared '
                           f'filesystem)')


def agreed_elapsed(elapsed_s: float, cfg: TrainConfig, procs: Processes) -> float:
    """The run's elapsed time [s] as all ranks agree on it: the slowest rank's clock.

    Rank clocks differ: under DDP with a time budget, each rank's own clock would stop it at
    its own step and (``schedule_by_time``) give it its own learning rate, and the weights
    would drift apart.
    """
    if procs.ddp and cfg.time_budget_s > 0:
        agreed = torch.tensor([elapsed_s], dtype=torch.float64, device=procs.device)
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
        return float(agreed.item())
    return elapsed_s


class LossWindow:
    """The loss terms summed on the device between two log lines (no host sync until a flush).

    Args:
        step: The optimizer step the window starts at.
    """

    def __init__(self, step: int) -> None:
        self.terms: dict[str, torch.Tensor] = {}
        self.step = step
        self.start_s = time.time()

    def add(self, terms: dict[str, torch.Tensor], grad_accum_steps: int) -> None:
        """Add one micro-step's terms (each a 1 / ``grad_accum_steps`` share of its step)."""
        for key, value in terms.items():
            value = value.detach() / grad_accum_steps
            self.terms[key] = self.terms[key] + value if key in self.terms else value

    def flush(self, step: int) -> tuple[dict[str, float], float]:
        """Mean terms per step since the last flush and the rate [steps/s]; start a new window."""
        steps = step - self.step
        mean_terms = {k: v.item() / max(steps, 1) for k, v in self.terms.items()}
        dt = time.time() - self.start_s
        self.terms, self.step, self.start_s = {}, step, time.time()
        return mean_terms, steps / dt if dt > 0 else 0.0


# -----------------------------------------------------------------------------------------------
# The training run.


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; return a summary (rank 0's view).

    Returns:
        ``step`` (optimizer steps done), ``stopped_by`` (``max_steps`` or ``time_budget``),
        ``metrics`` (last evaluation, per kind), ``losses`` (``(step, loss)`` of each log line of
        this invocation), ``steps_per_s`` and ``elapsed_s`` (whole run, all pieces).
    """
    # ---- processes and devices: torchrun sets RANK / LOCAL_RANK / WORLD_SIZE
    procs = start_processes(cfg)
    device, rank, world = procs.device, procs.rank, procs.world
    threads_before = torch.get_num_threads()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    use_bf16, ctx = autocast_for(cfg.amp, device)

    # ---- model: resume > init_from (scratch / Metric-Solver checkpoint / official weights)
    torch.manual_seed(cfg.seed)
    out_dir = pathlib.Path(cfg.out_dir)
    resuming = cfg.resume and (out_dir / STATE_FILE).is_file()
    log = RunLog(out_dir, procs.master, new_run=not resuming)
    state: dict[str, Any] = {}
    if resuming:  # the online weights: ckpt_raw when the run kept an EMA, else ckpt
        state, raw_model, origin = load_run(out_dir, cfg)
    else:
        raw_model, origin = init_model(cfg)
    ema = prepare_model(raw_model, cfg, device, out_dir if resuming else None, procs.master)
    config = raw_model.config

    # ---- optimizer (after the model is on its device), then DDP / compile
    optimizer = configure_optimizer(raw_model, cfg, device.type)
    if resuming:
        restore_optimizer(optimizer, state['optimizer'])
        set_rng_state(state['rng'])
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if procs.ddp:
        model = DDP(model, device_ids=[device.index] if device.type == 'cuda' else None)
    weights = LossWeights(*cfg.loss_weights)
    pool_m = torch.tensor(config.anchor_pool_m, dtype=torch.float32)
    mean, std = input_normalization(config, device)

    # ---- data: an endless, resumable stream; the held-out evaluation scenes
    step = int(state.get('step', 0))
    check_same_start(step, procs, out_dir / STATE_FILE)
    batches = train_batches(cfg, rank, world, device, start=step * cfg.grad_accum_steps)
    frames = eval_frames(cfg, device) if procs.master and cfg.eval_frames > 0 else {}
    log.start(step, origin, raw_model, cfg, procs, use_bf16)

    # ---- the loop. `elapsed` (agreed by all ranks) is measured after each step, used by the next.
    elapsed_before = float(state.get('elapsed_s', 0.0))
    elapsed = elapsed_before
    t_start = time.time()
    window = LossWindow(step)
    losses: list[tuple[int, float]] = []
    metrics: dict[str, Any] = {}
    stopped_by = 'max_steps'
    while step < cfg.max_steps:
        # learning rate of this step (optionally following the wall-clock budget)
        lr = get_lr(schedule_position(step, elapsed, cfg), cfg)
        set_lr(optimizer, lr)

        # forward / backward over the micro-steps, gradients synchronised on the last one
        for micro in range(cfg.grad_accum_steps):
            batch = next(batches)
            images = normalized_images(batch['image'], device, mean, std)
            depth_m = batch['depth_m'].to(device, non_blocking=True)
            anchors_m = sample_anchors(cfg, pool_m, images.shape[0], step, micro, rank).to(device)
            skip_sync = procs.ddp and micro < cfg.grad_accum_steps - 1
            with model.no_sync() if skip_sync else nullcontext():  # type: ignore[operator]
                terms = loss_terms(model, ctx, images, depth_m, anchors_m, config, weights,
                                   cfg.label_cap_m)
                (terms['loss'] / cfg.grad_accum_steps).backward()
            window.add(terms, cfg.grad_accum_steps)
        grad_norm = optimizer_step(raw_model, optimizer, cfg, ema, step)
        step += 1

        # stop on the wall-clock budget: every rank must stop at the same step
        elapsed = agreed_elapsed(elapsed_before + time.time() - t_start, cfg, procs)
        over_budget = cfg.time_budget_s > 0 and elapsed >= cfg.time_budget_s
        if over_budget:
            stopped_by = 'time_budget'
        done = step >= cfg.max_steps or over_budget

        # log (rank 0's loss; the .item() calls are the only host syncs of the loop)
        if step % cfg.log_interval == 0 or done:
            mean_terms, rate = window.flush(step)
            if not math.isfinite(mean_terms['loss']):
                raise FloatingPointError(f'step {step}: loss is {mean_terms["loss"]}; lower lr '
                                         f'or check the data')
            losses.append((step, mean_terms['loss']))
            log.train_step(step, mean_terms, lr, float(grad_norm), rate, elapsed, cfg, world)

        # evaluate and save (rank 0; the others go on and wait in the next all-reduce)
        if procs.master and frames and ((cfg.eval_interval and step % cfg.eval_interval == 0)
                                        or done):
            metrics = evaluate(ema.model if ema else raw_model, frames, device, ctx,
                               cfg.eval_batch_size)
            log.evaluation(step, metrics)
        if procs.master and ((cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0)
                             or done):
            save_state(out_dir, raw_model, ema.model if ema else None, optimizer, step,
                       elapsed_before + time.time() - t_start, cfg, metrics)
        if done:
            break

    # ---- the end: every rank reports its weights' digest (identical under DDP)
    elapsed = elapsed_before + time.time() - t_start
    # One write for the whole line: with PYTHONUNBUFFERED, print() writes the text and the newline
    # separately, and the ranks' lines interleave between the two on a shared stdout.
    sys.stdout.write(f'[rank {rank}] step {step} param_digest {param_digest(raw_model)}\n')
    sys.stdout.flush()
    if procs.ddp:
        dist.barrier()
        dist.destroy_process_group()
    torch.set_num_threads(threads_before)
    done_steps = step - int(state.get('step', 0))
    return {'step': step, 'stopped_by': stopped_by, 'metrics': metrics, 'losses': losses,
            'steps_per_s': done_steps / max(time.time() - t_start, 1e-9), 'elapsed_s': elapsed,
            'out_dir': str(out_dir)}


def run(args: argparse.Namespace) -> int:
    """Train as the options of ``train_config.add_config_arguments`` ask; say where it went."""
    summary = train(config_from_args(args))
    print(f'finished at step {summary["step"]} ({summary["stopped_by"]}); outputs in '
          f'{summary["out_dir"]}')
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m metric_solver_ros.train`` / torchrun (see module docstring)."""
    parser = argparse.ArgumentParser(prog='python -m metric_solver_ros.train',
                                     description='Train Metric-Solver.')
    add_config_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
