"""``metric-solver bench``: where the time of a frame goes, measured in one run.

Medians over ``--iters`` runs after ``--warmup`` runs, CUDA synchronised around every timing
(nanoGPT's bench.py habits). Stages:

- ``preprocess_ms``: upload, resize and normalise (on the device);
- ``encoder_ms``: the ViT encoder;
- ``decoder1_ms`` / ``decoder4_ms``: both heads for 1 anchor / 4 anchors in one batch, with the
  upsampling and decoding to metres;
- ``single_ms``: a whole frame with 1 anchor (image in, depth [m] on the host out);
- ``batched4_ms``: a whole frame with 4 anchors fused (one encoder pass, one decoder batch);
- ``sequential4_ms``: the naive way, 4 whole single-anchor frames;
- ``redecode_ms``: a new anchor for the last frame from its cached features;
- ``fusion_ms``: the fusion of 4 decoded anchors;
- ``fps`` (1000 / single_ms), ``peak_mem_mb`` (CUDA: peak allocated; CPU: peak RSS of the process);
- ``backend`` (what ran the network: torch, openvino, onnxruntime) and ``backend_detail``.

    metric-solver bench --device cpu --width 640 --height 480
    metric-solver bench --preset vitl --device cuda --input-size 518 --json
    metric-solver bench --device cpu --backend openvino --num-threads 2 --json
"""

from __future__ import annotations

import argparse

from metric_solver_ros.commands.common import add_runtime_arguments
from metric_solver_ros.runtime_options import MULTI_ANCHOR_RESOLUTIONS

ANCHORS_4 = (2.0, 10.0, 40.0, 80.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    model = parser.add_mutually_exclusive_group()
    model.add_argument('--checkpoint', default=None,
                       help='Metric-Solver safetensors file (default: the bundled model)')
    model.add_argument('--preset', default=None,
                       help='random weights of a preset instead (vits, vitb, vitl, vitg, tiny)')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda')
    parser.add_argument('--precision', default='auto', help='auto | fp32 | fp16 | bf16')
    parser.add_argument('--width', type=int, default=640, help='camera image width [px]')
    parser.add_argument('--height', type=int, default=480, help='camera image height [px]')
    parser.add_argument('--input-size', type=int, default=None,
                        help='network input shorter side [px] (default: the model\'s)')
    parser.add_argument('--resize-mode', default='keep_aspect', help='keep_aspect | square')
    parser.add_argument('--anchor', type=float, default=10.0, help='anchor of single runs [m]')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--compile', action='store_true', help='torch.compile the network')
    parser.add_argument('--cuda-graphs', action='store_true',
                        help='replay the encoder and decoder as CUDA graphs (CUDA only)')
    parser.add_argument('--multi-anchor-resolution', default='full',
                        choices=MULTI_ANCHOR_RESOLUTIONS,
                        help='heads\' finest stages at half resolution for several anchors')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last (NHWC) weights')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    add_runtime_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print the table or the JSON object."""
    import json

    import torch

    from metric_solver_ros.engine import DepthEngine

    common = dict(device=args.device, precision=args.precision, input_size=args.input_size,
                  resize_mode=args.resize_mode, compile=args.compile,
                  cuda_graphs=args.cuda_graphs, backend=args.backend,
                  num_threads=args.num_threads,
                  multi_anchor_resolution=args.multi_anchor_resolution,
                  channels_last=args.channels_last)
    if args.preset:
        from metric_solver_ros.model import create_model

        torch.manual_seed(0)
        engine = DepthEngine(create_model(args.preset), **common)
        model_name = f'{args.preset} (random weights)'
    else:
        from metric_solver_ros.checkpoint import default_model_path

        path = args.checkpoint or default_model_path()
        engine = DepthEngine.from_checkpoint(str(path), **common)
        model_name = str(path)
    result = measure(engine, args.width, args.height, args.anchor, args.warmup, args.iters)
    result['model'] = model_name
    result['threads'] = torch.get_num_threads()
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    return 0


def median_ms(fn, warmup: int, iters: int, sync) -> float:
    """Median wall time [ms] of ``fn()`` over ``iters`` runs after ``warmup`` runs.

    ``sync()`` is called around each run: a device synchronisation, or a no-op.
    """
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(engine, width: int, height: int, anchor_m: float = 10.0, warmup: int = 5,
            iters: int = 20) -> dict:
    """Time every stage of ``engine`` on a ``width`` x ``height`` image.

    Returns:
        The JSON-able result (keys listed in the module docstring, plus ratios).
    """
    import resource

    import numpy as np
    import torch

    from metric_solver_ros.engine import network_input_size

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    device = engine.device
    anchors4 = tuple(a for a in ANCHORS_4 if engine.pool_m[0] <= a <= engine.pool_m[-1])

    def sync() -> None:
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    stats = {}
    stats['single_ms'] = median_ms(lambda: engine.infer(image, anchor_m), warmup, iters, sync)
    stats['batched4_ms'] = median_ms(lambda: engine.infer(image, anchors4), warmup, iters, sync)
    stats['sequential4_ms'] = median_ms(
        lambda: [engine.infer(image, a) for a in anchors4], max(1, warmup // 2), iters, sync)
    engine.infer(image, anchor_m)
    stats['redecode_ms'] = median_ms(lambda: engine.redecode(anchor_m), warmup, iters, sync)
    # Stage timings as the engine reports them (medians over runs).
    stage_runs = [engine.infer(image, anchor_m).timings_ms for _ in range(iters)]
    stage4_runs = [engine.infer(image, anchors4).timings_ms for _ in range(iters)]
    for key in ('preprocess', 'encoder'):
        stats[f'{key}_ms'] = float(np.median([t[key] for t in stage_runs]))
    stats['decoder1_ms'] = float(np.median([t['decoder'] + t['fusion'] for t in stage_runs]))
    stats['decoder4_ms'] = float(np.median([t['decoder'] + t['fusion'] for t in stage4_runs]))
    stats['fusion_ms'] = float(np.median([t['fusion'] for t in stage4_runs]))
    if device.type == 'cuda':
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    net_h, net_w = network_input_size((height, width), engine.input_size,
                                      engine.config.patch_size, engine.resize_mode)
    return {
        **{k: round(v, 3) for k, v in stats.items()},
        'fps': round(1000.0 / stats['single_ms'], 2),
        'peak_mem_mb': round(peak_mb, 1),
        'batched4_over_single': round(stats['batched4_ms'] / stats['single_ms'], 3),
        'sequential4_over_batched4': round(stats['sequential4_ms'] / stats['batched4_ms'], 3),
        'redecode_over_single': round(stats['redecode_ms'] / stats['single_ms'], 3),
        'anchors4': list(anchors4),
        'device': str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device),
        'precision': str(engine.dtype).replace('torch.', ''),
        'cuda_graphs': engine.cuda_graphs,
        'multi_anchor_resolution': engine.multi_anchor_resolution,
        'channels_last': engine.channels_last,
        'backend': engine.backend,
        'backend_detail': engine.backend_description,
        'preset': engine.config.preset,
        'input_size': [net_h, net_w],
        'image_size': [height, width],
        'torch': torch.__version__,
    }


def format_table(result: dict) -> str:
    """A readable table of a :func:`measure` result."""
    rows = [
        ('preprocess', result['preprocess_ms']), ('encoder', result['encoder_ms']),
        ('decoder, 1 anchor', result['decoder1_ms']),
        ('decoder, 4 anchors batched', result['decoder4_ms']),
        ('fusion of 4 anchors', result['fusion_ms']),
        ('frame, 1 anchor', result['single_ms']),
        ('frame, 4 anchors batched', result['batched4_ms']),
        ('frame, 4 anchors sequential (naive)', result['sequential4_ms']),
        ('re-decode from cache, 1 anchor', result['redecode_ms']),
    ]
    graphs = ' | CUDA graphs' if result.get('cuda_graphs') else ''
    lines = [f'{result["model"]} | preset {result["preset"]} | {result["device"]} | '
             f'{result["precision"]}{graphs} | backend {result["backend_detail"]} | image '
             f'{result["image_size"][1]}x{result["image_size"][0]}'
             f' -> network {result["input_size"][1]}x{result["input_size"][0]}', '',
             f'{"stage":<40}{"median ms":>10}']
    lines += [f'{name:<40}{value:>10.2f}' for name, value in rows]
    lines += ['', f'fps (1 anchor): {result["fps"]:.1f}   peak memory: '
              f'{result["peak_mem_mb"]:.0f} MB',
              f'batched-4 / single: {result["batched4_over_single"]:.2f}   '
              f'sequential-4 / batched-4: {result["sequential4_over_batched4"]:.2f}   '
              f're-decode / full frame: {result["redecode_over_single"]:.2f}']
    return '\n'.join(lines)
