"""Multi-anchor fusion rules compared with one model, in one run: synthetic and real images.

The rules are those of ``metric_solver_ros.model.fusion`` (``FUSION_RULES``); each is scored
beside every anchor alone, through the engine (one encoder pass per image, the rules by
re-decoding), with ``metric-solver eval``'s metrics (GT resolution, mean over frames) and the
anchors' consistency (``anchor_metrics``). Held-out synthetic scenes (``train_data.EVAL_SEED``,
never a training seed) and the six real RGB-D pairs of ../shared/realdata (test inputs only).
Anchors: 1, 3, 10, 40 m indoors (cap 10 m), 5, 20, 80 m outdoors (cap 80 m).

    python benchmarks/fusion.py [--frames 24] [--size 196 266] [--checkpoint FILE] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch

from metric_solver_ros.anchor_metrics import CONSISTENCY_ANCHORS_M
from metric_solver_ros.model.fusion import FUSION_RULES

CAPS_M = {'indoor': 10.0, 'outdoor': 80.0}


def frames_by_kind(args: argparse.Namespace) -> dict[str, list]:
    """``{set name: [EvalFrame]}``: synthetic indoor / outdoor and real indoor / outdoor."""
    from metric_solver_ros.data.datasets import SyntheticDataset
    from metric_solver_ros.data.rgbd_folder import read_depth, read_rgb
    from metric_solver_ros.demo import REALDATA
    from metric_solver_ros.evaluation import EvalFrame
    from metric_solver_ros.train_data import EVAL_SEED

    sets: dict[str, list] = {}
    for kind in CAPS_M:
        data = SyntheticDataset(kind=kind, size=tuple(args.size), length=args.frames,
                                seed=EVAL_SEED)
        batch = data.batch(range(args.frames), torch.device('cpu'))
        images = (batch['image'].permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
        sets[f'synthetic {kind}'] = [
            EvalFrame(i, images[i], batch['depth_m'][i, 0].numpy(), name=str(i))
            for i in range(args.frames)]
    root = args.realdata or REALDATA
    for entry in json.loads((root / 'manifest.json').read_text())['samples']:
        frame = EvalFrame(0, read_rgb(root / entry['rgb']),
                          read_depth(root / entry['depth'], entry['depth_scale']),
                          name=entry['id'])
        sets.setdefault(f'real {entry["scene_type"]}', []).append(frame)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='default: the bundled model')
    parser.add_argument('--frames', type=int, default=24, help='synthetic scenes per kind')
    parser.add_argument('--size', type=int, nargs=2, default=(196, 266), metavar=('H', 'W'))
    parser.add_argument('--realdata', default=None, help='default: ../shared/realdata')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from metric_solver_ros.engine import DepthEngine
    from metric_solver_ros.evaluation import Prediction, evaluate

    engine = DepthEngine.from_checkpoint(args.checkpoint, device='cpu')

    def predictor(anchors):
        def predict(frame):
            results = engine.infer_each(frame.image, anchors)
            out = {f'anchor={a:g}': Prediction(r.depth_m, r.near, a)
                   for a, r in zip(anchors, results, strict=True)}
            for rule in FUSION_RULES:
                engine.fusion = rule
                out[rule] = Prediction(engine.redecode(anchors).depth_m)
            return out
        return predict

    report = {}
    for name, frames in frames_by_kind(args).items():
        kind = name.split()[-1]
        result = evaluate(frames, predictor(CONSISTENCY_ANCHORS_M[kind]), cap_m=CAPS_M[kind],
                          examples=0, progress=False)
        data = result.to_json()
        report[name] = {
            'frames': result.frames,
            'results': {n: {k: r[k] for k in ('delta1', 'abs_rel', 'rmse')}
                        for n, r in data['results'].items()},
            'scale_spread': data['anchor_consistency']['scale_spread'],
            'pixel_log_spread': data['anchor_consistency']['pixel_log_spread'],
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name, rep in report.items():
        rows = rep['results']
        singles = [n for n in rows if n.startswith('anchor=')]
        best_d1 = max(singles, key=lambda n: rows[n]['delta1'])
        best_rel = min(singles, key=lambda n: rows[n]['abs_rel'])
        print(f'\n{name}: {rep["frames"]} frames, anchors {CONSISTENCY_ANCHORS_M[name.split()[-1]]}'
              f', scale_spread {rep["scale_spread"]:.3f}, pixel_log_spread '
              f'{rep["pixel_log_spread"]:.3f}; best single: delta1 {best_d1}, AbsRel {best_rel}')
        print('| result | delta1 | AbsRel | RMSE [m] | beats best single (d1 and AbsRel) |')
        print('|---|---|---|---|---|')
        for n, r in rows.items():
            wins = '' if n in singles else (
                'yes' if r['delta1'] >= rows[best_d1]['delta1']
                and r['abs_rel'] <= rows[best_rel]['abs_rel'] else 'no')
            print(f'| {n} | {r["delta1"]:.3f} | {r["abs_rel"]:.3f} | {r["rmse"]:.2f} | {wins} |')


if __name__ == '__main__':
    main()
