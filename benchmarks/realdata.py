"""A model on the six real RGB-D pairs of ../shared/realdata: per-image accuracy, in one run.

What a user of the bundled (synthetic-only) model, or of their own checkpoint, gets on real
cameras: NYU Depth v2 (2), TUM RGB-D and SUN RGB-D indoors at anchor 10 m / cap 10 m; KITTI and
nuScenes outdoors at anchor 80 m / cap 80 m (sparse projected-LiDAR ground truth): the held-out
protocol of training (``train_data.EVAL_SETS``). Metrics as in ``metric-solver eval``
(``evaluation.evaluate``, GT resolution, mean over the valid pixels of each image), plus the
scale diagnostics: ``scale`` is median(GT) / median(prediction) (1 = right metric scale) and
``d1 aligned`` is delta1 after that correction (structure only). Per scene kind it also prints
the best constant-depth guess: the one depth, searched on a log grid of 0.5-80 m, whose mean
delta1 over the kind's images is highest (an oracle: the constant is chosen on the same
images), beside the model's mean delta1. The images are evaluation inputs only, never training
data (../shared/realdata/README.md).

    python benchmarks/realdata.py [--checkpoint FILE] [--realdata DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='default: the bundled model')
    parser.add_argument('--realdata', type=pathlib.Path, default=None,
                        help='default: ../shared/realdata')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from metric_solver_ros.data.rgbd_folder import read_depth, read_rgb
    from metric_solver_ros.demo import REALDATA
    from metric_solver_ros.engine import DepthEngine
    from metric_solver_ros.evaluation import EnginePredictor, EvalFrame, evaluate
    from metric_solver_ros.train_data import EVAL_SETS

    protocol = {kind: (anchor_m, cap_m) for kind, anchor_m, cap_m in EVAL_SETS}
    root = args.realdata or REALDATA
    engine = DepthEngine.from_checkpoint(args.checkpoint, device='cpu')
    manifest = json.loads((root / 'manifest.json').read_text())
    print(f'model: {args.checkpoint or "bundled default"}\n')
    print('| image | GT | anchor / cap [m] | delta1 | AbsRel | RMSE [m] | scale | d1 aligned |')
    print('|---|---|---|---|---|---|---|---|')
    by_kind: dict[str, list[tuple[float, np.ndarray, float]]] = {}
    for entry in manifest['samples']:
        image = read_rgb(root / entry['rgb'])
        gt_m = read_depth(root / entry['depth'], entry['depth_scale'])  # 0 = invalid
        anchor_m, cap_m = protocol[entry['scene_type']]
        frame = EvalFrame(index=0, image=image, gt_depth_m=gt_m, name=entry['id'])
        result = evaluate([frame], EnginePredictor(engine, (anchor_m,)), cap_m=cap_m,
                          examples=0, progress=False)
        record = next(iter(result.results.values())).per_frame[0]
        print(f'| {entry["id"]} ({entry["width"]}x{entry["height"]}) | {entry["gt_type"]} | '
              f'{anchor_m:g} / {cap_m:g} | {record["delta1"]:.3f} | {record["abs_rel"]:.3f} | '
              f'{record["rmse"]:.2f} | {record["scale_ratio"]:.2f} | '
              f'{record["delta1_aligned"]:.3f} |')
        by_kind.setdefault(entry['scene_type'], []).append((record['delta1'], gt_m, cap_m))
    print('\n| scene kind | images | model delta1 (mean) | best constant [m] | its delta1 |')
    print('|---|---|---|---|---|')
    for kind, rows in by_kind.items():
        constant_m, constant_d1 = best_constant(rows)
        print(f'| {kind} | {len(rows)} | {np.mean([r[0] for r in rows]):.3f} | {constant_m:.2f} '
              f'| {constant_d1:.3f} |')


def best_constant(rows: list[tuple[float, np.ndarray, float]]) -> tuple[float, float]:
    """The constant depth [m] with the highest mean delta1 over ``(_, gt_m, cap_m)`` rows."""
    from metric_solver_ros.metrics import compute_metrics

    best = (0.0, -1.0)
    for constant_m in np.geomspace(0.5, 80.0, 200):
        d1 = float(np.mean([compute_metrics(np.full_like(gt, constant_m), gt, cap_m=cap)['delta1']
                            for _, gt, cap in rows]))
        best = max(best, (float(constant_m), d1), key=lambda b: b[1])
    return best


if __name__ == '__main__':
    main()
