"""Extra anchors that cost little: the heads' decode per anchor, before and now, and its depth.

Two changes to the decoding of one image at several anchors (``model/dpt.py``):

- **shared stages** (always on, exact): ``projects``, ``resize_layers`` and ``layerX_rn`` are
  linear, so the image's part runs once and each anchor adds the response of those stages to its
  constant projection bias (``dpt.constant_response``); "before" is the per-anchor computation
  (``shared_stages=False``, the model's default: what the heads computed until now);
- **half tail** (engine ``multi_anchor_resolution='half'``): the finest stages at half
  resolution when several anchors are decoded; the fused depth is upsampled as always.

Prints, in ONE run on this machine: the decoder time of 1 and 4 anchors for each variant
(medians of interleaved rounds) and their ratios; then the fused depth (4 anchors, the default
fusion rule) of ``half`` against ``full`` through the engine: delta1 (share of pixels within a
factor 1.25 of ``full``'s depth) and the median |ln ratio|, on held-out synthetic scenes and the
six real pairs of ../shared/realdata. The goal (issue 23): delta1 >= 0.995.

    python benchmarks/multi_anchor.py [--checkpoint FILE] [--preset vitl --size 518 518]
        [--device cuda] [--precision bf16] [--rounds 20] [--frames 8] [--json]

With ``--preset`` the timing uses a randomly initialised network of that preset (no accuracy);
without it, the bundled model (or ``--checkpoint``) for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

ANCHORS_M = {'indoor': (1.0, 3.0, 10.0, 40.0), 'outdoor': (5.0, 20.0, 80.0)}


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@torch.inference_mode()
def decoder_times(model, size: tuple[int, int], device: torch.device, dtype: torch.dtype,
                  rounds: int) -> dict[str, float]:
    """Median decoder time [ms] of each variant, 1 and 4 anchors, interleaved rounds."""
    patch = model.config.patch_size
    patch_hw = (size[0] // patch, size[1] // patch)
    image = torch.randn(1, 3, patch_hw[0] * patch, patch_hw[1] * patch, device=device,
                        dtype=dtype)
    features = model.encode(image)
    one = torch.tensor([10.0], device=device)
    four = torch.tensor([1.0, 3.0, 10.0, 40.0], device=device)
    variants = {
        'before_1': lambda: model.decode(features, one, patch_hw, check_anchors=False),
        'before_4': lambda: model.decode(features, four, patch_hw, check_anchors=False),
        'shared_4': lambda: model.decode(features, four, patch_hw, check_anchors=False,
                                         shared_stages=True),
        'half_4': lambda: model.decode(features, four, patch_hw, check_anchors=False,
                                       reduced_tail=True),
        'shared_half_4': lambda: model.decode(features, four, patch_hw, check_anchors=False,
                                              reduced_tail=True, shared_stages=True),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # warm-up
        for run in variants.values():
            run()
    _sync(device)
    for _ in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            _sync(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {f'{name}_ms': statistics.median(values) for name, values in samples.items()}


def depth_agreement(engine_full, engine_half, frames: list, anchors: tuple[float, ...]
                    ) -> dict[str, float]:
    """Mean over frames of delta1 and median |ln ratio| of ``half``'s fused depth vs ``full``'s."""
    delta1, log_err = [], []
    for frame in frames:
        full = engine_full.infer(frame.image, anchors).depth_m
        half = engine_half.infer(frame.image, anchors).depth_m
        both = np.isfinite(full) & np.isfinite(half) & (full > 0) & (half > 0)
        ratio = np.abs(np.log(half[both] / full[both]))
        delta1.append(float((ratio < np.log(1.25)).mean()) if both.any() else 1.0)
        log_err.append(float(np.median(ratio)) if both.any() else 0.0)
        # +inf in one and not the other counts as a disagreement on those pixels
        mixed = np.isinf(full) != np.isinf(half)
        delta1[-1] *= both.sum() / max(1, both.sum() + mixed.sum())
    return {'delta1': float(np.mean(delta1)), 'median_abs_log': float(np.mean(log_err)),
            'frames': len(frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default=None, help='default: the bundled model')
    parser.add_argument('--preset', default=None, help='time a random network of this preset')
    parser.add_argument('--size', type=int, nargs=2, default=(196, 266), metavar=('H', 'W'))
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--precision', default='fp32', choices=('fp32', 'bf16', 'fp16'))
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--frames', type=int, default=8, help='synthetic scenes per kind')
    parser.add_argument('--realdata', default=None, help='default: ../shared/realdata')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
    from metric_solver_ros.model import create_model

    device = torch.device(args.device)
    dtype = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.precision]
    if args.preset:
        model = create_model(args.preset).to(device=device, dtype=dtype)
    else:
        model = load_checkpoint(args.checkpoint or default_model_path()).to(device=device,
                                                                             dtype=dtype)
    model.eval()
    report: dict = {'device': str(device), 'precision': args.precision,
                    'preset': model.config.preset, 'size': list(args.size)}
    if device.type == 'cuda':
        report['card'] = torch.cuda.get_device_name(device)
    times = decoder_times(model, tuple(args.size), device, dtype, args.rounds)
    times['ratio_shared_vs_before_4'] = times['shared_4_ms'] / times['before_4_ms']
    times['ratio_half_vs_before_4'] = times['half_4_ms'] / times['before_4_ms']
    times['ratio_shared_half_vs_before_4'] = times['shared_half_4_ms'] / times['before_4_ms']
    times['ratio_before_4_vs_1'] = times['before_4_ms'] / times['before_1_ms']
    times['ratio_best_4_vs_before_1'] = min(
        times[f'{k}_4_ms'] for k in ('before', 'shared', 'half', 'shared_half')
    ) / times['before_1_ms']
    report['decoder'] = times
    if not args.json:
        print(f'decoder ({report["preset"]}, {args.size[0]}x{args.size[1]}, {device}, '
              f'{args.precision}): ' + ', '.join(f'{k} {v:.3f}' for k, v in times.items()))
    if not args.preset:
        report['agreement'] = agreement(model.float().cpu(), args)
        if not args.json:
            for name, row in report['agreement'].items():
                print(f'half vs full, {name}: delta1 {row["delta1"]:.4f}, median |ln ratio| '
                      f'{row["median_abs_log"]:.4f} ({row["frames"]} frames)')
    if args.json:
        print(json.dumps(report, indent=2))


def agreement(model, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Fused depth of ``half`` vs ``full`` per set of frames (CPU engines, fp32)."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from fusion import frames_by_kind

    from metric_solver_ros.engine import DepthEngine

    full = DepthEngine(model, device='cpu', precision='fp32')
    half = DepthEngine(model, device='cpu', precision='fp32', multi_anchor_resolution='half')
    out = {}
    for name, frames in frames_by_kind(args).items():
        kind = 'indoor' if 'indoor' in name else 'outdoor'
        out[name] = depth_agreement(full, half, frames, ANCHORS_M[kind])
    return out


if __name__ == '__main__':
    main()
