"""Where a synthetic-data training step's time goes: layout, transfer, rendering, the network.

    python benchmarks/train_step.py                        # CPU: the default recipe's batch
    python benchmarks/train_step.py --device cuda --batch-size 128 --workers 12    # a GPU

Each phase is timed over ``--repeat`` batches after one warm-up, the device synchronised around
it (all in this process, one after the other):

- ``layout``: ``SyntheticDataset.specs`` of one batch (numpy on one host core: what each of
  ``scene_workers`` does per batch);
- ``pack``: ``SyntheticDataset.pack`` of it (also in the worker);
- ``unpickle``: loading the packed batch a worker sent (the training process's share of the
  transfer; ``SceneSpec`` objects for comparison, which is what workers sent before packing);
- ``render``: ``SyntheticDataset.render`` of the packed batch on the device;
- ``step``: forward, loss, backward, gradient clipping, AdamW and EMA: ``train.py``'s step,
  from its own functions, and its ``amp`` rule (``--amp``; ``auto``: bf16 autocast on GPUs
  with bf16 hardware only, ``runtime_options.native_bf16``).

The training loop can go no faster than either side: the workers deliver at most
``workers / (layout + pack)`` batches/s, the training process needs ``unpickle + render + step``
per batch. The script prints both rates and which one binds. It prints ratios and rates from one
run; record figures in benchmarks/RESULTS.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> tuple[float, object]:
    """Mean wall time [ms] of ``fn`` over ``repeat`` calls after a warm-up; its last result."""

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    result = fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        result = fn()
    sync()
    return (time.perf_counter() - start) / repeat * 1e3, result


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; return a process exit code."""
    from metric_solver_ros.data.datasets import SyntheticDataset
    from metric_solver_ros.losses import LossWeights
    from metric_solver_ros.model import create_model
    from metric_solver_ros.train import (
        EMA,
        autocast_for,
        configure_optimizer,
        input_normalization,
        loss_terms,
        normalized_images,
        optimizer_step,
        sample_anchors,
    )
    from metric_solver_ros.train_config import TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--preset', default='tiny')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, nargs=2, default=(196, 252), metavar=('H', 'W'))
    parser.add_argument('--workers', type=int, default=0,
                        help='scene_workers the rate estimate assumes (0: layout in the loop)')
    parser.add_argument('--amp', default='auto', choices=('auto', 'bf16', 'off'),
                        help="train.py's amp: auto = bf16 autocast on CUDA, fp32 on the CPU "
                             '(the CPU recipe, config/train_default.yaml, uses bf16)')
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--json', action='store_true', help='one JSON line instead of a table')
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    cfg = TrainConfig(batch_size=args.batch_size, image_size=tuple(args.size), ema_decay=0.998,
                      amp=args.amp)
    dataset = SyntheticDataset(kind='mixed', size=cfg.image_size, length=2**40, seed=cfg.seed)
    batch_no = iter(range(10**9))

    def next_indices() -> list[int]:  # a new batch of scenes every call, like training
        first = next(batch_no) * args.batch_size
        return list(range(first, first + args.batch_size))

    ms: dict[str, float] = {}
    ms['layout'], specs = timed(lambda: dataset.specs(next_indices()), device, args.repeat)
    ms['pack'], packed = timed(lambda: dataset.pack(specs), device, args.repeat)
    packed_bytes, spec_bytes = pickle.dumps(packed), pickle.dumps(specs)
    ms['unpickle'], _ = timed(lambda: pickle.loads(packed_bytes), device, args.repeat)
    ms['unpickle_specs'], _ = timed(lambda: pickle.loads(spec_bytes), device, args.repeat)
    ms['render'], batch = timed(lambda: dataset.render(packed, device), device, args.repeat)

    model = create_model(args.preset).to(device).train()
    config = model.config
    optimizer = configure_optimizer(model, cfg, device.type)
    ema = EMA(model, cfg.ema_decay)
    weights = LossWeights(*cfg.loss_weights)
    pool_m = torch.tensor(config.anchor_pool_m, dtype=torch.float32)
    mean, std = input_normalization(config, device)
    use_bf16, ctx = autocast_for(cfg.amp, device)
    images = normalized_images(batch['image'], device, mean, std)
    step_no = iter(range(10**9))

    def step() -> torch.Tensor:  # train.py's step (no DDP, no gradient accumulation)
        i = next(step_no)
        anchors_m = sample_anchors(cfg, pool_m, images.shape[0], i).to(device)
        loss = loss_terms(model, ctx, images, batch['depth_m'], anchors_m, config, weights)['loss']
        loss.backward()
        optimizer_step(model, optimizer, cfg, ema, i)
        return loss

    ms['step'], _ = timed(step, device, args.repeat)

    trainer_ms = ms['unpickle'] + ms['render'] + ms['step']
    worker_ms = ms['layout'] + ms['pack']
    if args.workers > 0:
        supply_per_s = args.workers / worker_ms * 1e3
    else:  # layout in the training process itself (scene_workers: 0, no pickling)
        trainer_ms = worker_ms + ms['render'] + ms['step']
        supply_per_s = float('inf')
    demand_per_s = 1e3 / trainer_ms
    rate = min(supply_per_s, demand_per_s)
    result = {
        'device': str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device),
        'preset': args.preset, 'batch_size': args.batch_size, 'size': list(args.size),
        'workers': args.workers, 'bf16': use_bf16, 'ms': {k: round(v, 2) for k, v in ms.items()},
        'trainer_batches_per_s': round(demand_per_s, 2),
        'workers_batches_per_s': None if args.workers == 0 else round(supply_per_s, 2),
        'bound': 'training process' if demand_per_s <= supply_per_s else 'scene workers',
        'images_per_s': round(rate * args.batch_size, 1),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['device']}, {args.preset}, batch {args.batch_size} at "
          f"{args.size[0]}x{args.size[1]}, bf16 {use_bf16}, {args.repeat} repeats")
    for name, value in ms.items():
        print(f'  {name:15s} {value:9.2f} ms / batch')
    workers = (f"{result['workers_batches_per_s']} batches/s from {args.workers} workers"
               if args.workers else 'layout in the training process')
    print(f"  training process {result['trainer_batches_per_s']} batches/s; {workers}; "
          f"bound: {result['bound']}; ~{result['images_per_s']} images/s")
    return 0


if __name__ == '__main__':
    sys.exit(main())
