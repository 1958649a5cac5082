"""What a training run keeps between its pieces: checkpoints, resume checks, RNG state, init.

``out_dir`` holds ``ckpt.safetensors`` (the model to use: the EMA weights when there is an EMA),
``ckpt_raw.safetensors`` (the online weights, with an EMA only) and ``train_state.pt`` (step,
elapsed time, optimizer and RNG states, the run's config). :func:`save_state` writes them so
that an interruption is detected on resume (:func:`load_run`); :func:`init_model` builds the
model a new run starts from.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import random
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from metric_solver_ros.model import MetricSolver, create_model, get_config
from metric_solver_ros.train_config import TrainConfig

CKPT_FILE = 'ckpt.safetensors'
"""The model to use (the EMA weights when the run keeps an EMA)."""
RAW_CKPT_FILE = 'ckpt_raw.safetensors'
"""The online (non-EMA) weights, written only when the run keeps an EMA."""
STATE_FILE = 'train_state.pt'
"""Step, elapsed time, optimizer and RNG states, the run's config (``weights_only`` loadable)."""


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every state-dict tensor (sorted keys): equal digests = identical weights."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
                 .tobytes())
    return h.hexdigest()


def get_rng_state() -> dict[str, Any]:
    """RNG states (torch, CUDA, numpy, Python) as plain tensors / containers.

    Plain, so ``train_state.pt`` loads with ``torch.load(weights_only=True)``.
    """
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        'torch': torch.get_rng_state(),
        'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        'python': random.getstate(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states that :func:`get_rng_state` returned."""
    torch.set_rng_state(state['torch'])
    name, keys, *rest = state['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_state(out_dir: pathlib.Path, raw_model: MetricSolver, ema_model: MetricSolver | None,
               optimizer: torch.optim.Optimizer, step: int, elapsed_s: float, cfg: TrainConfig,
               metrics: dict[str, Any] | None) -> None:
    """Write ``ckpt.safetensors`` (+ ``ckpt_raw.safetensors`` with EMA) and ``train_state.pt``.

    Every file is written to a temporary name and renamed, model files first, so an
    interruption leaves the previous complete state or a newer model with the older state
    (detected on resume by the step stored in both).

    Args:
        out_dir: The run directory.
        raw_model: The online weights.
        ema_model: Their moving average (None: the run keeps no EMA).
        optimizer: The optimizer, whose state resuming restores.
        step: Optimizer steps done.
        elapsed_s: Wall-clock time [s] of the run so far, all pieces.
        cfg: The run's config (stored in every file).
        metrics: The last evaluation (stored in the model files' metadata).
    """
    from metric_solver_ros.checkpoint import save_checkpoint

    meta = {'train_step': str(step), 'train_config': json.dumps(asdict(cfg)),
            'eval_metrics': json.dumps(metrics or {})}
    if ema_model is not None:
        save_checkpoint(out_dir / RAW_CKPT_FILE, raw_model, meta)
    else:  # no stale online weights from an earlier run with EMA
        (out_dir / RAW_CKPT_FILE).unlink(missing_ok=True)
    save_checkpoint(out_dir / CKPT_FILE, ema_model if ema_model is not None else raw_model, meta)
    state = {'step': step, 'elapsed_s': elapsed_s, 'optimizer': optimizer.state_dict(),
             'rng': get_rng_state(), 'train_config': asdict(cfg)}
    tmp = out_dir / f'{STATE_FILE}.tmp'
    torch.save(state, tmp)
    os.replace(tmp, out_dir / STATE_FILE)


def load_run(out_dir: pathlib.Path, cfg: TrainConfig) -> tuple[dict[str, Any], MetricSolver, str]:
    """Load the run in ``out_dir`` to resume it: its state, online weights and a description.

    Returns:
        ``(state, model, origin)``: ``train_state.pt``'s contents, the online weights
        (``ckpt_raw`` when the run keeps an EMA, else ``ckpt``; on the CPU) and a log line.

    Raises:
        ValueError: ``cfg`` asks for a different run (:func:`check_resumable`), or the model
            and the state are of different steps (the last save was interrupted).
    """
    from metric_solver_ros.checkpoint import load_checkpoint, read_checkpoint_metadata

    state = torch.load(out_dir / STATE_FILE, map_location='cpu', weights_only=True)
    check_resumable(state.get('train_config', {}), cfg, out_dir)
    raw_path = out_dir / RAW_CKPT_FILE
    raw_path = raw_path if raw_path.is_file() else out_dir / CKPT_FILE
    model = load_checkpoint(raw_path)
    saved_step = int(read_checkpoint_metadata(raw_path).get('train_step', -1))
    if saved_step != state['step']:
        raise ValueError(f'{out_dir}: model (step {saved_step}) and {STATE_FILE} (step '
                         f'{state["step"]}) disagree; the last save was interrupted')
    return state, model, f'resumed from {out_dir} at step {state["step"]}'


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
                         f'{out_dir / CKPT_FILE} with a new out_dir.')


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
        state = load_official_state_dict(path)
        check_encoder_fits(path, state, cfg)
        model, report, kind = import_official(state, cfg.preset, **overrides)
    except CheckpointError as error:
        raise ValueError(f'init_from {path}: {error}') from None
    return model, f'{kind} weights {path}\n{report.format()}'


def check_encoder_fits(path: pathlib.Path, state_dict: dict[str, torch.Tensor],
                       cfg: TrainConfig) -> None:
    """Refuse an official file whose encoder is not the size of ``cfg``'s, in one line.

    Told from the file's tensor shapes (token width, block count) before any key is imported,
    so a wrong ``--preset`` gets one line naming both encoders instead of a list of keys that do
    not fit. A file without a ``cls_token`` passes: the importer then says key by key what is
    wrong with it.

    Args:
        path: The ``init_from`` file (for the message).
        state_dict: Its tensors (:func:`~metric_solver_ros.checkpoint.load_official_state_dict`).
        cfg: The run's config: ``preset`` with the ``model`` overrides.

    Raises:
        ValueError: ``FILE holds a vits encoder (embed 384, depth 12); --preset is tiny (embed
            192, depth 12): use --preset vits or another file``.
    """
    from metric_solver_ros.checkpoint import official_encoder_size, preset_of_encoder

    size = official_encoder_size(state_dict)
    wanted = get_config(cfg.preset, **cfg.model)
    if size is None or size == (wanted.embed_dim, wanted.depth):
        return
    embed_dim, depth = size
    found = preset_of_encoder(embed_dim, depth)
    resized = (wanted.embed_dim, wanted.depth) != (get_config(cfg.preset).embed_dim,
                                                   get_config(cfg.preset).depth)
    if found is None:
        fix = f'use --model with embed_dim {embed_dim} and depth {depth}'
    elif resized:
        fix = f'use --preset {found} without a --model embed_dim / depth'
    else:
        fix = f'use --preset {found}'
    raise ValueError(f'{path} holds a {found or "custom"} encoder (embed {embed_dim}, depth '
                     f'{depth}); --preset is {cfg.preset}{" resized by --model" if resized else ""}'
                     f' (embed {wanted.embed_dim}, depth {wanted.depth}): {fix} or another file')
