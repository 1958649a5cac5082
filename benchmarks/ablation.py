"""Ablation on the synthetic world (paper Table 3a / 3b directions) -> benchmarks/ABLATION.md.

Table 3a: four variants trained with the same recipe (``config/ablation.yaml``: data seeds,
steps, image size, learning rates), differing only in their switch:

- ``full``: the anchor pool, both heads, the mask head;
- ``fixed_anchor``: one anchor (10 m) during training and evaluation;
- ``one_head``: the near head only, a hard cap at 80 m (anchor 80 m: ``d / 80`` clipped at 1);
- ``no_mask``: no mask head (near/far decided by ``d_sn < 0.99``).

Each is evaluated on the same held-out synthetic scenes (``train_data.EVAL_SEED``): indoors with
anchor 10 m and cap 10 m, outdoors with anchor 80 m and cap 80 m, as the paper (the fixed-anchor
and one-head variants use their only anchor).

Table 3b: one model (``--checkpoint``, default the bundled model) evaluated with every anchor
against every evaluation cap, outdoors (20/40/80/120 m x caps 20/80/120 m) and indoors
(2/4/10 m x caps 2/4/10 m).

    python benchmarks/ablation.py train            # trains the four variants (resumable)
    python benchmarks/ablation.py report           # evaluates them + the per-anchor table
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / 'config' / 'ablation.yaml'
OUT = REPO / 'out' / 'ablation'
VARIANTS: dict[str, list[str]] = {
    'full': [],
    'fixed_anchor': ['--anchor_sampling', 'fixed', '--fixed_anchor_m', '10.0'],
    'one_head': ['--anchor_sampling', 'fixed', '--fixed_anchor_m', '80.0',
                 '--model', '{far_head: false}'],
    'no_mask': ['--model', '{mask_head: false}'],
}
#: (kind, anchor [m], cap [m]) per variant; None = the paper's 10 m indoor / 80 m outdoor.
VARIANT_SETS = {
    'fixed_anchor': (('indoor', 10.0, 10.0), ('outdoor', 10.0, 80.0)),
    'one_head': (('indoor', 80.0, 10.0), ('outdoor', 80.0, 80.0)),
}
PER_ANCHOR = {'outdoor': ((20.0, 40.0, 80.0, 120.0), (20.0, 80.0, 120.0)),
              'indoor': ((2.0, 4.0, 10.0), (2.0, 4.0, 10.0))}
METRICS = ('delta1', 'delta2', 'abs_rel', 'rmse', 'log10')


def train_variants(names: list[str]) -> None:
    """Train each variant (skipped when its checkpoint is complete)."""
    for name in names:
        out_dir = OUT / name
        command = [sys.executable, '-m', 'metric_solver_ros.train', '--config', str(CONFIG),
                   '--out_dir', str(out_dir), *VARIANTS[name]]
        print(' '.join(command), flush=True)
        subprocess.run(command, check=True, cwd=REPO)


def evaluate_checkpoint(path: pathlib.Path, sets, frames_per_kind: int, size) -> dict:
    """The paper's metrics of one checkpoint on the held-out synthetic scenes."""
    import torch

    from metric_solver_ros.checkpoint import load_checkpoint
    from metric_solver_ros.train import evaluate
    from metric_solver_ros.train_config import TrainConfig
    from metric_solver_ros.train_data import eval_frames

    torch.set_num_threads(2)
    model = load_checkpoint(path).float()  # the bundled model is stored as float16
    cfg = TrainConfig(image_size=tuple(size), eval_frames=frames_per_kind)
    frames = eval_frames(cfg, torch.device('cpu'))
    return evaluate(model, frames, torch.device('cpu'), contextlib.nullcontext(), 8, sets)


def _row(name: str, metrics: dict) -> str:
    sky = metrics.get('sky_far_fraction')
    mask = metrics['mask_accuracy']  # None without a mask head (0.0 is a real value)
    values = ' | '.join(f'{metrics[m]:.3f}' for m in METRICS)
    return f'| {name} | {values} | {float("nan") if mask is None else mask:.3f} | ' \
           f'{"-" if sky is None else f"{sky:.3f}"} |'


def report(checkpoint: str | None, frames_per_kind: int) -> str:
    """Evaluate the variants and the per-anchor table; return the Markdown."""
    from metric_solver_ros.checkpoint import default_model_path, read_checkpoint_config
    from metric_solver_ros.train_data import EVAL_SEED, EVAL_SETS

    lines = ['### Table 3a: model design (same recipe, `config/ablation.yaml`)', '']
    results = {}
    for name in VARIANTS:
        path = OUT / name / 'ckpt.safetensors'
        if not path.is_file():
            lines.append(f'- {name}: not trained (`python benchmarks/ablation.py train`)')
            continue
        size = read_checkpoint_config(path).input_size
        results[name] = evaluate_checkpoint(path, VARIANT_SETS.get(name, EVAL_SETS),
                                            frames_per_kind, size)
    for kind, cap in (('indoor', 10), ('outdoor', 80)):
        lines += ['', f'**{kind}, cap {cap} m** ({frames_per_kind} held-out scenes, seed '
                  f'{EVAL_SEED})', '',
                  '| variant | delta1 | delta2 | AbsRel | RMSE [m] | log10 | mask acc. | '
                  'sky -> far |',
                  '|---|---|---|---|---|---|---|---|']
        for name, metrics in results.items():
            lines.append(_row(f'{name} (anchor {metrics[kind]["anchor_m"]:g} m)', metrics[kind]))
    checkpoint_path = pathlib.Path(checkpoint) if checkpoint else default_model_path()
    size = read_checkpoint_config(checkpoint_path).input_size
    lines += ['', f'### Table 3b: anchor vs evaluation cap (`{checkpoint_path.name}`)', '']
    for kind, (anchors, caps) in PER_ANCHOR.items():
        sets = tuple((kind, a, c) for a in anchors for c in caps)
        metrics = evaluate_checkpoint(checkpoint_path, sets, frames_per_kind, size)
        header = ' | '.join(f'cap {c:g} m: delta1 / AbsRel' for c in caps)
        lines += ['', f'**{kind}**', '', f'| anchor | {header} |',
                  '|---|' + '---|' * len(caps)]
        for a in anchors:
            cells = []
            for c in caps:
                m = metrics[f'{kind}@{a:g}/{c:g}']
                cells.append(f'{m["delta1"]:.3f} / {m["abs_rel"]:.3f}')
            lines.append(f'| {a:g} m | ' + ' | '.join(cells) + ' |')
    (OUT / 'results.json').write_text(json.dumps(results, indent=2, default=str))
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    """Train or report."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('action', choices=('train', 'report'))
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--checkpoint', default=None, help='model of the per-anchor table')
    parser.add_argument('--frames', type=int, default=48, help='held-out scenes per kind')
    args = parser.parse_args(argv)
    if args.action == 'train':
        train_variants(args.variants)
    else:
        print(report(args.checkpoint, args.frames))
    return 0


if __name__ == '__main__':
    sys.exit(main())
