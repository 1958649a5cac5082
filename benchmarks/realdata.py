"""A model on the six real RGB-D pairs of ../shared/realdata: per-image accuracy, in one run.

What a user of the bundled (synthetic-only) model, or of their own checkpoint, gets on real
cameras: NYU Depth v2 (2), TUM RGB-D and SUN RGB-D indoors at anchor 10 m / cap 10 m; KITTI and
nuScenes outdoors at anchor 80 m / cap 80 m (sparse projected-LiDAR ground truth). Metrics as in
``metric-solver eval`` (``evaluation.evaluate``, GT resolution, mean over the valid pixels of each
image), plus the scale diagnostics: ``scale`` is median(GT) / median(prediction) (1 = right
metric scale) and ``d1 aligned`` is delta1 after that correction (structure only). The images
are evaluation inputs only, never training data (../shared/realdata/README.md).

    python benchmarks/realdata.py [--checkpoint FILE] [--realdata DIR] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

REALDATA = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'realdata'
#: scene_type -> (anchor [m], evaluation cap [m]): the paper's indoor / outdoor protocol.
PROTOCOL = {'indoor': (10.0, 10.0), 'outdoor': (80.0, 80.0)}


def load_sample(root: pathlib.Path, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return the RGB uint8 image and the GT depth [m] (0 = invalid) of a manifest entry."""
    import cv2

    bgr = cv2.imread(str(root / entry['rgb']), cv2.IMREAD_COLOR)
    raw = cv2.imread(str(root / entry['depth']), cv2.IMREAD_UNCHANGED)
    if bgr is None or raw is None:
        raise FileNotFoundError(f'{entry["id"]}: cannot read {entry["rgb"]} / {entry["depth"]}')
    depth_m = raw.astype(np.float32) / float(entry['depth_scale'])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth_m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='default: the bundled model')
    parser.add_argument('--realdata', type=pathlib.Path, default=REALDATA)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from metric_solver_ros.engine import DepthEngine
    from metric_solver_ros.evaluation import EnginePredictor, EvalFrame, evaluate

    engine = DepthEngine.from_checkpoint(args.checkpoint, device='cpu')
    manifest = json.loads((args.realdata / 'manifest.json').read_text())
    print(f'model: {args.checkpoint or "bundled default"}\n')
    print('| image | GT | anchor / cap [m] | delta1 | AbsRel | RMSE [m] | scale | d1 aligned |')
    print('|---|---|---|---|---|---|---|---|')
    for entry in manifest['samples']:
        image, gt_m = load_sample(args.realdata, entry)
        anchor_m, cap_m = PROTOCOL[entry['scene_type']]
        frame = EvalFrame(index=0, image=image, gt_depth_m=gt_m, name=entry['id'])
        result = evaluate([frame], EnginePredictor(engine, (anchor_m,)), cap_m=cap_m,
                          examples=0, progress=False)
        record = next(iter(result.results.values())).per_frame[0]
        print(f'| {entry["id"]} ({entry["width"]}x{entry["height"]}) | {entry["gt_type"]} | '
              f'{anchor_m:g} / {cap_m:g} | {record["delta1"]:.3f} | {record["abs_rel"]:.3f} | '
              f'{record["rmse"]:.2f} | {record["scale_ratio"]:.2f} | '
              f'{record["delta1_aligned"]:.3f} |')


if __name__ == '__main__':
    main()
