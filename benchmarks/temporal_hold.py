"""The temporal filter with and without the stillness hint, in-process, on cached predictions.

For each kind (indoor: anchor 10 m, cap 10 m; outdoor: anchor 80 m, cap 80 m), motion and seed
this renders the synthetic sequence (``data/synthetic/sequence.py``, 10 Hz), runs the bundled
model once on the CPU (one thread; the depth is cached in ``--cache`` as ``.npz``) and scores,
with ``evaluation.evaluate`` as ``metric-solver eval`` does:

* ``off``, ``scale``, ``full``: the filter blind (``--motion-hint off``);
* ``scale+hint``, ``full+hint``: the filter told each frame's camera motion from the exact
  poses (what ``--motion-hint auto`` passes from a bag's /tf);
* ``hold`` (static sequences only): the bound of any global-scale filter: every frame's global
  log scale (the filter's measure, the median over pixels of ``ln(d_t / d_0)``) set exactly to
  the first frame's.

Use it to tune on seeds 5 and 6 and to report seed 22 (``benchmarks/temporal_sequences.py`` runs
the same through the CLI and the bags):

    python benchmarks/temporal_hold.py --cache /tmp/i22_cache --seeds 5 6 [--frames 20]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402

KINDS = {'indoor': 10.0, 'outdoor': 80.0}  # kind: anchor = cap [m]
MOTIONS = ('static', 'pan', 'forward')
VARIANTS = ('off', 'scale', 'full', 'scale+hint', 'full+hint', 'hold')
KEYS = ('delta1', 'abs_rel', 'scale_jitter', 'scale_step', 'flicker', 'warped_error')


def cached_sequence(cache: pathlib.Path, kind: str, motion: str, seed: int, frames: int,
                    size: tuple[int, int], engine_box: list) -> list:
    """The sequence's samples with the model's depth (``sample.pred_m``), cached on disk."""
    from metric_solver_ros.data.synthetic import render_sequence, sequence_spec

    path = cache / f'{kind}_{motion}_{seed}_{frames}_{size[0]}x{size[1]}.npz'
    samples = list(render_sequence(sequence_spec(kind, motion, frames, seed), *size))
    if path.exists():
        preds = np.load(path)['pred_m']
    else:
        if not engine_box:
            from metric_solver_ros.engine import DepthEngine

            engine_box.append(DepthEngine.from_checkpoint(None, device='cpu', num_threads=1))
        preds = np.stack([engine_box[0].infer(s.image, KINDS[kind]).depth_m for s in samples])
        cache.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, pred_m=preds)
    for sample, pred in zip(samples, preds, strict=True):
        sample.pred_m = pred.astype(np.float32)
    return samples


def hold_bound(preds: list[np.ndarray]) -> list[np.ndarray]:
    """Every frame scaled so that its median ``ln(d_t / d_0)`` is 0 (perfect global hold)."""
    out = []
    with np.errstate(divide='ignore', invalid='ignore'):
        first = np.log(preds[0])
        for pred in preds:
            change = np.log(pred) - first
            step = float(np.median(change[np.isfinite(change)]))
            out.append(pred * np.float32(np.exp(-step)))
    return out


def score(samples: list, variant: str, cap_m: float, settings=None) -> dict[str, float | None]:
    """Metrics of one variant over one sequence (``evaluation.evaluate``, as eval does)."""
    from metric_solver_ros import evaluation

    preds = [s.pred_m for s in samples]
    if variant == 'hold':
        preds = hold_bound(preds)
    by_index = dict(enumerate(preds))

    def predictor(frame):
        return {'result': evaluation.Prediction(by_index[frame.index])}

    if variant not in ('off', 'hold'):
        mode, _, hint = variant.partition('+')
        predictor = evaluation.FilteredPredictor(predictor, mode, settings,
                                                 motion_hint=bool(hint))
    result = evaluation.evaluate(evaluation.sample_frames(samples), predictor, cap_m=cap_m,
                                 examples=0, progress=False, temporal=True)
    means = result.results['result'].frame_mean()
    temporal = result.temporal['result'].summary()
    return {key: means[key] if key in means else temporal[key] for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cache', type=pathlib.Path, required=True)
    parser.add_argument('--seeds', type=int, nargs='+', default=[22])
    parser.add_argument('--frames', type=int, default=20)
    parser.add_argument('--size', type=int, nargs=2, default=(240, 320), metavar=('H', 'W'))
    parser.add_argument('--kinds', nargs='+', default=list(KINDS))
    parser.add_argument('--motions', nargs='+', default=list(MOTIONS))
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS))
    parser.add_argument('--json', type=pathlib.Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    engine_box: list = []
    rows = []
    print('| seed | kind | motion | variant | ' + ' | '.join(KEYS) + ' |')
    print('|' + '---|' * (4 + len(KEYS)))
    for seed in args.seeds:
        for kind in args.kinds:
            for motion in args.motions:
                samples = cached_sequence(args.cache, kind, motion, seed, args.frames,
                                          tuple(args.size), engine_box)
                for variant in args.variants:
                    if variant == 'hold' and motion != 'static':
                        continue
                    row = {'seed': seed, 'kind': kind, 'motion': motion, 'variant': variant,
                           **score(samples, variant, KINDS[kind])}
                    rows.append(row)
                    cells = ' | '.join('-' if row[k] is None else f'{row[k]:.4f}' for k in KEYS)
                    print(f'| {seed} | {kind} | {motion} | {variant} | {cells} |', flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + '\n')


if __name__ == '__main__':
    main()
