"""The engine sharing the CPU: frames/s beside a second PyTorch process and beside busy loops.

A robot computer always runs other nodes. For each backend this runs the engine (one anchor,
image in, depth out) in a process of its own for ``--seconds``:

- alone;
- beside a second PyTorch process: the same encoder in a loop with torch's defaults (every core,
  OpenMP's default waiting: a neighbour that nobody tuned);
- beside ``--busy`` plain busy loops (Python ``while True``), one per core by default.

and prints each frame rate relative to running alone (fair share beside one other process on the
same cores: 50 %), the neighbour's own rate, and the engine's process CPU time per frame (idle
workers that spin add to it). The engine runs as the node would: ``num_threads`` (0: the default
rule) and ``OMP_WAIT_POLICY=PASSIVE`` (set by our package before torch loads);
``--spin`` imports torch first, leaving OpenMP's default waiting, to see what that costs.

    python benchmarks/cpu_sharing.py --backends torch openvino --seconds 10
    python benchmarks/cpu_sharing.py --backends torch --num-threads 2 --spin --json
    python benchmarks/cpu_sharing.py --backends openvino --warmup-s 40 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

ROLES = ('engine', 'torch-neighbour', 'busy')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--backends', nargs='+', default=['torch', 'openvino'])
    parser.add_argument('--num-threads', type=int, default=0,
                        help='engine threads (0: the default rule, as the node)')
    parser.add_argument('--input-size', type=int, default=196, help='network short side [px]')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--seconds', type=float, default=10.0, help='measured window per run')
    parser.add_argument('--warmup-s', type=float, default=0.0,
                        help='frames run before the window (time for num_threads 0 to adapt)')
    parser.add_argument('--busy', type=int, default=os.cpu_count() or 2,
                        help='busy loops of the third condition (default: one per core)')
    parser.add_argument('--spin', action='store_true',
                        help='run the engine with OpenMP\'s default (spinning) waiting')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--role', choices=ROLES, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--backend', default='torch', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == 'engine':
        return _engine(args)
    if args.role == 'torch-neighbour':
        return _torch_neighbour(args)
    if args.role == 'busy':
        return _busy()

    rows = []
    for backend in args.backends:
        row = {'backend': backend}
        row['alone'] = _run_engine(args, backend, [])
        row['beside_torch'] = _run_engine(args, backend, [['torch-neighbour']])
        row['beside_busy'] = _run_engine(args, backend, [['busy']] * args.busy)
        for key in ('beside_torch', 'beside_busy'):
            row[f'{key}_ratio'] = round(row[key]['fps'] / row['alone']['fps'], 3)
        rows.append(row)
    result = {'rows': rows, 'cores': os.cpu_count(), 'num_threads': args.num_threads,
              'omp_wait_policy': 'default' if args.spin else 'PASSIVE',
              'busy_loops': args.busy, 'seconds': args.seconds,
              'image': [args.height, args.width], 'input_size': args.input_size}
    print(json.dumps(result) if args.json else _table(result))
    return 0


def _table(result: dict) -> str:
    lines = [f'engine frames/s on {result["cores"]} cores, num_threads {result["num_threads"]}, '
             f'OMP_WAIT_POLICY {result["omp_wait_policy"]}, {result["seconds"]:g} s per run',
             '', '| backend | alone fps | beside PyTorch fps (ratio) | neighbour it/s | '
             f'beside {result["busy_loops"]} busy loops fps (ratio) | engine CPU per frame '
             '[ms]: alone / beside PyTorch |', '|---|---|---|---|---|---|']
    for row in result['rows']:
        neighbour = row['beside_torch'].get('neighbours', [{}])[0].get('rate')
        lines.append(
            f'| {row["backend"]} ({row["alone"]["detail"]}) | {row["alone"]["fps"]:.1f} | '
            f'{row["beside_torch"]["fps"]:.1f} ({row["beside_torch_ratio"]:.0%}) | '
            f'{neighbour if neighbour is not None else "-"} | '
            f'{row["beside_busy"]["fps"]:.1f} ({row["beside_busy_ratio"]:.0%}) | '
            f'{row["alone"]["cpu_ms_per_frame"]:.0f} / '
            f'{row["beside_torch"]["cpu_ms_per_frame"]:.0f} |')
    return '\n'.join(lines)


def _run_engine(args: argparse.Namespace, backend: str, neighbours: list[list[str]]) -> dict:
    """One engine run, with the given neighbour processes alive around its whole window."""
    script = os.path.abspath(__file__)
    base_env = dict(os.environ)
    base_env.pop('OMP_WAIT_POLICY', None)
    base_env.pop('OMP_NUM_THREADS', None)
    procs = [subprocess.Popen([sys.executable, script, '--role', role[0],
                               '--input-size', str(args.input_size),
                               '--width', str(args.width), '--height', str(args.height)],
                              stdout=subprocess.PIPE, text=True, env=base_env)
             for role in neighbours]
    try:
        time.sleep(1.0 if procs else 0.0)  # the neighbours are up and busy
        out = subprocess.run(
            [sys.executable, script, '--role', 'engine', '--backend', backend,
             '--num-threads', str(args.num_threads), '--input-size', str(args.input_size),
             '--width', str(args.width), '--height', str(args.height),
             '--seconds', str(args.seconds), '--warmup-s', str(args.warmup_s),
             *(['--spin'] if args.spin else [])],
            env=base_env, check=True, capture_output=True, text=True).stdout
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        reports = [proc.communicate(timeout=60)[0] for proc in procs]
    result = json.loads(out.strip().splitlines()[-1])
    result['neighbours'] = [json.loads(r.strip().splitlines()[-1]) for r in reports
                            if r.strip()]
    return result


def _engine(args: argparse.Namespace) -> int:
    if args.spin:  # torch (OpenMP) loaded before our package: the library's default waiting
        import torch  # noqa: F401
    import numpy as np

    from metric_solver_ros.engine import DepthEngine

    engine = DepthEngine.from_checkpoint(None, device='cpu', precision='fp32',
                                         input_size=args.input_size, backend=args.backend,
                                         num_threads=args.num_threads)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    for _ in range(5):  # export / compile and warm-up
        engine.infer(image, 10.0)
    warm_until = time.perf_counter() + args.warmup_s
    while time.perf_counter() < warm_until:
        engine.infer(image, 10.0)
    frames, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < args.seconds:
        engine.infer(image, 10.0)
        frames += 1
    elapsed = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu_start) * 1e3 / max(frames, 1)
    print(json.dumps({'fps': round(frames / elapsed, 2), 'frames': frames,
                      'cpu_ms_per_frame': round(cpu_ms, 1),
                      'detail': engine.backend_description}))
    return 0


def _torch_neighbour(args: argparse.Namespace) -> int:
    """The same encoder in a loop with torch's default threads and waiting, until SIGINT."""
    import torch

    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
    from metric_solver_ros.engine import network_input_size

    model = load_checkpoint(default_model_path()).float().eval()
    net_hw = network_input_size((args.height, args.width), args.input_size, 14)
    x = torch.randn(1, 3, *net_hw)
    runs, start = 0, time.perf_counter()
    try:
        with torch.inference_mode():
            while True:
                model.encode(x)
                runs += 1
    except KeyboardInterrupt:
        pass
    rate = runs / (time.perf_counter() - start)
    print(json.dumps({'role': 'torch-neighbour', 'rate': round(rate, 2),
                      'threads': torch.get_num_threads()}))
    return 0


def _busy() -> int:
    try:
        while True:
            pass
    except KeyboardInterrupt:
        return 0


if __name__ == '__main__':
    sys.exit(main())
