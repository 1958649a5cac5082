"""All backends side by side, in one run: frame times, their ratios, parity with torch.

For each backend (torch, OpenVINO f32, OpenVINO with its bf16 hint, ONNX Runtime) on the same
input and threads: ``metric-solver bench``'s stages (:func:`metric_solver_ros.commands.bench.
measure`), repeated in ``--rounds`` interleaved rounds (medians of the rounds: a neighbour's burst
hits every backend alike), the speed-up of a frame over torch, and the ratios of a 4-anchor
batched frame and a re-decode to a one-anchor frame. Then parity with torch on the real images of
../shared/realdata: the fused depth of anchors 2, 10, 40, 80 m at the image resolution, as
delta1 of backend vs torch (``max(b / t, t / b) < 1.25`` over pixels finite in both), median
``|ln(b / t)|`` and the share of pixels where both agree on finite vs +inf.

    python benchmarks/backends.py [--num-threads 2] [--input-size 196] [--rounds 3] [--json]
    python benchmarks/backends.py --rounds 0 --realdata ../shared/realdata   # parity only
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics

import numpy as np

#: (label, backend, precision) of each column, torch first (the reference).
CONFIGS = (('torch', 'torch', 'fp32'), ('openvino', 'openvino', 'fp32'),
           ('openvino bf16 hint', 'openvino', 'bf16'), ('onnxruntime', 'onnxruntime', 'fp32'))
PARITY_ANCHORS_M = (2.0, 10.0, 40.0, 80.0)
KEYS = ('single_ms', 'batched4_ms', 'redecode_ms', 'encoder_ms', 'decoder1_ms', 'decoder4_ms')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='default: the bundled model')
    parser.add_argument('--num-threads', type=int, default=2)
    parser.add_argument('--input-size', type=int, default=196, help='network short side [px]')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--rounds', type=int, default=3, help='timing rounds (0: parity only)')
    parser.add_argument('--realdata', type=pathlib.Path, default=None,
                        help='folder with manifest.json (default: ../shared/realdata)')
    parser.add_argument('--iters', type=int, default=10, help='timed runs per stage and round')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    args = parser.parse_args()

    # Our package first: it sets OMP_WAIT_POLICY before torch loads OpenMP, as in the node.
    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
    from metric_solver_ros.commands.bench import measure
    from metric_solver_ros.demo import REALDATA
    from metric_solver_ros.engine import DepthEngine, network_input_size

    args.checkpoint = args.checkpoint or str(default_model_path())
    engines = {}
    for label, backend, precision in CONFIGS:
        engines[label] = DepthEngine(load_checkpoint(args.checkpoint), device='cpu',
                                     precision=precision, input_size=args.input_size,
                                     backend=backend, num_threads=args.num_threads)
    rounds: dict[str, list[dict]] = {label: [] for label in engines}
    for _ in range(args.rounds):
        for label, engine in engines.items():
            rounds[label].append(measure(engine, args.width, args.height, warmup=3,
                                         iters=args.iters))
    parity = _parity(engines, _real_images(args.realdata or REALDATA))
    rows = []
    for label, engine in engines.items() if args.rounds else ():
        row = {'backend': label, 'detail': engine.backend_description}
        row.update({key: statistics.median(r[key] for r in rounds[label]) for key in KEYS})
        row['fps'] = 1000.0 / row['single_ms']
        row['batched4_over_single'] = row['batched4_ms'] / row['single_ms']
        row['redecode_over_single'] = row['redecode_ms'] / row['single_ms']
        rows.append(row)
    for row in rows:
        row['speedup_vs_torch'] = rows[0]['single_ms'] / row['single_ms']
    import torch

    result = {'rows': rows, 'parity': parity, 'num_threads': args.num_threads,
              'image': [args.height, args.width],
              'input_size': list(network_input_size((args.height, args.width), args.input_size,
                                                    14)),
              'rounds': args.rounds, 'iters': args.iters, 'torch': torch.__version__,
              'checkpoint': args.checkpoint,
              'details': {label: e.backend_description for label, e in engines.items()}}
    print(json.dumps(result) if args.json else _tables(result))
    return 0


def _real_images(root: pathlib.Path) -> list[tuple[str, np.ndarray]]:
    """``(id, rgb uint8)`` of every sample in ``root/manifest.json`` (none if it is absent)."""
    from metric_solver_ros.data.rgbd_folder import read_rgb

    manifest = root / 'manifest.json'
    if not manifest.is_file():
        print(f'no {manifest}: parity skipped')
        return []
    return [(entry['id'], read_rgb(root / entry['rgb']))
            for entry in json.loads(manifest.read_text())['samples']]


def _parity(engines: dict, images: list) -> list[dict]:
    """Fused depth of each backend vs torch on every real image."""
    reference = engines['torch']
    records = []
    for name, rgb in images:
        expected = reference.infer(rgb, PARITY_ANCHORS_M).depth_m
        for label, engine in engines.items():
            if label == 'torch':
                continue
            got = engine.infer(rgb, PARITY_ANCHORS_M).depth_m
            both = np.isfinite(got) & np.isfinite(expected)
            ratio = got[both] / expected[both]
            records.append({
                'backend': label, 'image': name,
                'delta1': float(np.mean(np.maximum(ratio, 1 / ratio) < 1.25)),
                'median_abs_log_ratio': float(np.median(np.abs(np.log(ratio)))),
                'finite_agreement': float(np.mean(np.isfinite(got) == np.isfinite(expected))),
            })
    return records


def _tables(result: dict) -> str:
    net_h, net_w = result['input_size']
    lines = [f'{result["checkpoint"]} | image {result["image"][1]}x{result["image"][0]} -> '
             f'network {net_w}x{net_h} | {result["num_threads"]} threads | medians of '
             f'{result["rounds"]} rounds x {result["iters"]} runs | torch {result["torch"]} | '
             f'OMP_WAIT_POLICY {os.environ.get("OMP_WAIT_POLICY", "unset")}', '']
    if result['rows']:
        lines += ['| backend | frame, 1 anchor [ms] | frames/s | vs torch | encoder [ms] | '
                  'decoder 1 anchor [ms] | batched-4 / single | re-decode / single |',
                  '|---|---|---|---|---|---|---|---|']
    for row in result['rows']:
        lines.append(
            f'| {row["backend"]} | {row["single_ms"]:.1f} | {row["fps"]:.1f} | '
            f'{row["speedup_vs_torch"]:.2f}x | {row["encoder_ms"]:.1f} | '
            f'{row["decoder1_ms"]:.1f} | {row["batched4_over_single"]:.2f} | '
            f'{row["redecode_over_single"]:.2f} |')
    lines += ['', 'What ran: ' + '; '.join(f'{label} = {detail}'
                                          for label, detail in result['details'].items()), '',
              '| backend | image | delta1 vs torch | median abs ln ratio | finite/inf agree |',
              '|---|---|---|---|---|']
    for rec in result['parity']:
        lines.append(f'| {rec["backend"]} | {rec["image"]} | {rec["delta1"]:.4f} | '
                     f'{rec["median_abs_log_ratio"]:.2e} | {rec["finite_agreement"]:.4f} |')
    return '\n'.join(lines)


if __name__ == '__main__':
    raise SystemExit(main())
