"""Latency the temporal filter adds per frame, per mode, on the CPU (one thread).

The stream: one rendered synthetic depth frame (640x480 by default, sky at +inf) with a
frame-to-frame scale wobble (std 4 %) and per-pixel noise (2 %), 20 distinct frames cycled.
Each mode filters the same frames after a warm-up; medians and the 10th / 90th percentiles of
``TemporalFilter.apply`` alone [ms].

    python benchmarks/temporal_filter.py [--size 480 640] [--iters 500]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'))
    parser.add_argument('--iters', type=int, default=500)
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    args = parser.parse_args()

    from metric_solver_ros.data.synthetic import render_scene
    from metric_solver_ros.temporal_filter import MODES, TemporalFilter

    height, width = args.size
    base = render_scene('outdoor', 11, height, width).depth_m
    rng = np.random.default_rng(0)
    frames = [base * np.float32(np.exp(rng.normal(0.0, 0.04)))
              * np.exp(rng.normal(0.0, 0.02, base.shape)).astype(np.float32) for _ in range(20)]
    figures = {}
    for mode in MODES:
        stream = TemporalFilter(mode)
        for i in range(50):  # warm-up (and a steady state of the filter)
            stream.apply(frames[i % len(frames)])
        times = []
        for i in range(args.iters):
            frame = frames[i % len(frames)]
            start = time.perf_counter()
            stream.apply(frame)
            times.append(time.perf_counter() - start)
        ms = np.array(times) * 1e3
        figures[mode] = {'median_ms': float(np.median(ms)), 'p10_ms': float(np.percentile(ms, 10)),
                         'p90_ms': float(np.percentile(ms, 90))}
        print(f'{mode:>5}: median {figures[mode]["median_ms"]:.3f} ms  '
              f'p10 {figures[mode]["p10_ms"]:.3f}  p90 {figures[mode]["p90_ms"]:.3f}  '
              f'({width}x{height}, last reset: {stream.last_reset})')
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump({'size': [height, width], 'iters': args.iters, **figures}, stream, indent=2)


if __name__ == '__main__':
    main()
