"""Equal-budget A/B of the cross-anchor consistency term, fine-tuning the bundled model.

Two arms start from the bundled model and train the same number of steps on the same synthetic
stream (same seed, batch, image size, schedule), differing only in the 5th loss weight:

- ``base``: the bundled model's last-stage loss, ``[1.0, 1.0, 0.05, 0.1]`` (paper + SILog 0.1);
- ``consistency``: the same plus the consistency term (each image decoded at a second, different
  pool anchor; ``losses.consistency_loss``), ``[1.0, 1.0, 0.05, 0.1, W]``.

The consistency arm decodes every image twice (the encoder once): it costs more decoder time
per step, so "equal budget" here is equal steps and images, not equal seconds. Both arms are then
scored by training's evaluation (held-out scenes of ``train_data.EVAL_SEED``: delta1, AbsRel,
``scale_spread``, ``pixel_log_spread``, sky beyond 80 m) and by the fusion benchmark
(``benchmarks/fusion.py --checkpoint``).

    python benchmarks/consistency_ab.py train [--steps 400] [--weight 0.1]
    python benchmarks/consistency_ab.py report [--frames 64]
"""

from __future__ import annotations

import argparse
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / 'out' / 'consistency_ab'
BASE_WEIGHTS = [1.0, 1.0, 0.05, 0.1]


def arm_overrides(name: str, steps: int, weight: float, amp: str = 'off') -> dict:
    """TrainConfig overrides of one arm (on top of config/train_default.yaml)."""
    from metric_solver_ros.checkpoint import default_model_path

    return {
        'out_dir': str(OUT / name), 'init_from': str(default_model_path()),
        'max_steps': steps, 'time_budget_s': 0.0, 'schedule_by_time': False,
        'lr': 5.0e-5, 'min_lr': 5.0e-6, 'warmup_steps': 20, 'ema_decay': 0.99,
        'eval_interval': steps, 'checkpoint_interval': steps, 'log_interval': 25,
        'eval_frames': 32, 'seed': 4242, 'amp': amp,
        'loss_weights': BASE_WEIGHTS + ([weight] if name == 'consistency' else []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('action', choices=('train', 'report'))
    parser.add_argument('--steps', type=int, default=400)
    parser.add_argument('--weight', type=float, default=0.1, help='consistency weight')
    parser.add_argument('--arms', nargs='+', default=['base', 'consistency'])
    parser.add_argument('--amp', default='off', help='autocast of both arms (bf16 only on '
                        'CPUs with AVX512-BF16 / AMX; default: %(default)s)')
    parser.add_argument('--frames', type=int, default=64, help='held-out scenes per kind')
    args = parser.parse_args()

    import torch

    from metric_solver_ros.train import evaluate, train
    from metric_solver_ros.train_config import load_config
    from metric_solver_ros.train_data import eval_frames

    if args.action == 'train':
        for name in args.arms:
            cfg = load_config(REPO / 'config' / 'train_default.yaml',
                              arm_overrides(name, args.steps, args.weight, args.amp))
            summary = train(cfg)
            print(name, json.dumps({k: v for k, v in summary.items() if k != 'losses'},
                                   default=str))
        return

    from contextlib import nullcontext

    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint

    cfg = load_config(REPO / 'config' / 'train_default.yaml', {'eval_frames': args.frames})
    frames = eval_frames(cfg, torch.device('cpu'))
    rows = {'bundled': default_model_path(),
            **{name: OUT / name / 'ckpt.safetensors' for name in args.arms}}
    print('| model | kind | delta1 | AbsRel | scale_spread | pixel_log_spread | sky > 80 m |')
    print('|---|---|---|---|---|---|---|')
    for name, path in rows.items():
        model = load_checkpoint(path, device='cpu').float()
        for kind, m in evaluate(model, frames, torch.device('cpu'), nullcontext(), 8).items():
            sky = '-' if m['sky_far_fraction'] is None else f'{m["sky_far_fraction"]:.3f}'
            print(f'| {name} | {kind} | {m["delta1"]:.3f} | {m["abs_rel"]:.3f} | '
                  f'{m["scale_spread"]:.3f} | {m["pixel_log_spread"]:.3f} | {sky} |')


if __name__ == '__main__':
    main()
