"""Latency the temporal filter adds per frame, per mode, on the CPU (one thread).

The stream: one rendered synthetic depth frame (640x480 by default, sky at +inf) with a
frame-to-frame scale wobble (std 4 %) and per-pixel noise (2 %), 20 distinct frames cycled.
Each mode filters the same frames after a warm-up; medians and the 10th / 90th percentiles of
``TemporalFilter.apply`` alone [ms], and the process CPU time per frame (equal to the wall time
when nothing runs on other threads).

``--compare-legacy`` also times ``full`` with the per-pixel pass before issue 22b (twelve
numpy passes per row block, :class:`LegacyFull` here), interleaved frame by frame with the
current one, so that both see the same machine load (printed from ``/proc/loadavg``); the
ratio of their medians is the figure to compare across machines.

    python benchmarks/temporal_filter.py [--size 480 640] [--iters 500] [--compare-legacy]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402

from metric_solver_ros.temporal_filter import _BLOCK_PX, MODES, TemporalFilter  # noqa: E402


class LegacyFull(TemporalFilter):
    """``full`` with the per-pixel pass as it was before issue 22b (the reference timing)."""

    def __init__(self) -> None:
        super().__init__('full')

    def _start(self, depth: np.ndarray) -> np.ndarray:
        out = super()._start(depth)
        block = (max(1, _BLOCK_PX // depth.shape[1]), depth.shape[1])
        self._scratch = (*(np.empty(block, np.float32) for _ in range(3)),
                         np.empty(block, bool), np.empty(block, np.int32))
        return out

    def _blend_static(self, depth, factor, moved, out) -> None:
        tol = np.float32(self.settings.pixel_static_tol)
        keep = np.float32(self.settings.pixel_keep)
        rows = self._scratch[0].shape[0]
        for top in range(0, out.shape[0], rows):
            frame, pixels = out[top:top + rows], self._pixels[top:top + rows]
            diff, size, bound, static, keep_bits = (a[:frame.shape[0]] for a in self._scratch)
            np.multiply(depth[top:top + rows], factor, out=frame)
            np.multiply(pixels, moved, out=diff)
            diff -= frame
            np.abs(diff, out=size)
            np.multiply(frame, tol, out=bound)
            np.less(size, bound, out=static)
            np.copyto(keep_bits, static, casting='unsafe')
            np.negative(keep_bits, out=keep_bits)
            np.bitwise_and(diff.view(np.int32), keep_bits, out=diff.view(np.int32))
            diff *= keep
            frame += diff
            np.copyto(pixels, frame)


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {'median_ms': float(np.median(ms)), 'p10_ms': float(np.percentile(ms, 10)),
            'p90_ms': float(np.percentile(ms, 90))}


def _time(streams: dict[str, TemporalFilter], frames: list[np.ndarray],
          iters: int) -> dict[str, dict[str, float]]:
    """Interleaved timing: every frame goes through each stream in turn."""
    for i in range(50):  # warm-up (and a steady state of the filter)
        for stream in streams.values():
            stream.apply(frames[i % len(frames)])
    wall = {name: [] for name in streams}
    cpu = {name: 0.0 for name in streams}
    for i in range(iters):
        frame = frames[i % len(frames)]
        for name, stream in streams.items():
            cpu_start, start = time.process_time(), time.perf_counter()
            stream.apply(frame)
            wall[name].append(time.perf_counter() - start)
            cpu[name] += time.process_time() - cpu_start
    return {name: {**_stats(wall[name]), 'cpu_ms': 1e3 * cpu[name] / iters,
                   'last_reset': streams[name].last_reset} for name in streams}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'))
    parser.add_argument('--iters', type=int, default=500)
    parser.add_argument('--compare-legacy', action='store_true',
                        help='also time the pre-22b full filter, interleaved with full')
    parser.add_argument('--json', default=None, help='also write the figures to this file')
    args = parser.parse_args()

    from metric_solver_ros.data.synthetic import render_scene

    height, width = args.size
    base = render_scene('outdoor', 11, height, width).depth_m
    rng = np.random.default_rng(0)
    frames = [base * np.float32(np.exp(rng.normal(0.0, 0.04)))
              * np.exp(rng.normal(0.0, 0.02, base.shape)).astype(np.float32) for _ in range(20)]
    load = pathlib.Path('/proc/loadavg')
    print(f'load average: {load.read_text().strip() if load.exists() else "unknown"}, '
          f'{os.cpu_count()} cores')
    figures = {}
    for mode in MODES:
        streams = {mode: TemporalFilter(mode)}
        if mode == 'full' and args.compare_legacy:
            streams['full_legacy'] = LegacyFull()
        figures.update(_time(streams, frames, args.iters))
    for name, f in figures.items():
        print(f'{name:>11}: median {f["median_ms"]:.3f} ms  p10 {f["p10_ms"]:.3f}  p90 '
              f'{f["p90_ms"]:.3f}  cpu {f["cpu_ms"]:.3f} ms/frame  ({width}x{height}, last '
              f'reset: {f["last_reset"]})')
    if args.compare_legacy:
        ratio = figures['full']['median_ms'] / figures['full_legacy']['median_ms']
        figures['full_vs_legacy'] = ratio
        print(f'full / full_legacy (interleaved medians): {ratio:.2f}')
    if args.json:
        with open(args.json, 'w') as stream:
            json.dump({'size': [height, width], 'iters': args.iters, **figures}, stream, indent=2)


if __name__ == '__main__':
    main()
