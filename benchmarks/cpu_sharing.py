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
``--spin`` imports torch first, leaving OpenMP's default waiting, to see what that costs. The
neighbours are up (the PyTorch one has run its encoder once) before a window starts.

``--cycles N`` interleaves the three conditions instead, for a machine whose speed drifts
between runs (this VM's did, up to 2x within minutes): one engine process and one set of
neighbours, paused (SIGSTOP) and resumed (SIGCONT) so that the conditions alternate in windows
of ``--seconds`` (after ``--settle-s`` uncounted), N times, in a rotating order; each ratio is
the median over the cycles of the window's rate over the same cycle's alone rate. The
neighbour's own rate is not reported then (it is paused two windows in three). With
``num_threads`` 0 the automatic thread choice sees its neighbours come and go, as on a robot;
its steady state beside each one is what the sequential runs with ``--warmup-s`` measure.

    python benchmarks/cpu_sharing.py --backends torch openvino --seconds 10
    python benchmarks/cpu_sharing.py --backends torch --num-threads 2 --spin --json
    python benchmarks/cpu_sharing.py --backends openvino --warmup-s 40 --seconds 15
    python benchmarks/cpu_sharing.py --backends torch openvino --cycles 5 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROLES = ('engine', 'torch-neighbour', 'busy')
#: The conditions, in the order of the first interleaved cycle.
CONDITIONS = ('alone', 'beside_torch', 'beside_busy')


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
    parser.add_argument('--cycles', type=int, default=0,
                        help='interleave the conditions in this many cycles (module docstring)')
    parser.add_argument('--settle-s', type=float, default=1.0,
                        help='--cycles: uncounted frames after each switch of condition')
    parser.add_argument('--json', action='store_true', help='print one JSON object')
    parser.add_argument('--role', choices=ROLES, default=None, help=argparse.SUPPRESS)
    parser.add_argument('--backend', default='torch', help=argparse.SUPPRESS)
    parser.add_argument('--pids', default='{}', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == 'engine':
        return _engine(args)
    if args.role == 'torch-neighbour':
        return _torch_neighbour(args)
    if args.role == 'busy':
        return _busy()

    rows = []
    for backend in args.backends:
        if args.cycles:
            rows.append(_run_interleaved(args, backend))
            continue
        row = {'backend': backend}
        row['alone'] = _run_engine(args, backend, [])
        row['beside_torch'] = _run_engine(args, backend, ['torch-neighbour'])
        row['beside_busy'] = _run_engine(args, backend, ['busy'] * args.busy)
        for key in ('beside_torch', 'beside_busy'):
            row[f'{key}_ratio'] = round(row[key]['fps'] / row['alone']['fps'], 3)
        rows.append(row)
    result = {'rows': rows, 'cores': os.cpu_count(), 'num_threads': args.num_threads,
              'omp_wait_policy': 'default' if args.spin else 'PASSIVE',
              'busy_loops': args.busy, 'seconds': args.seconds, 'cycles': args.cycles,
              'image': [args.height, args.width], 'input_size': args.input_size}
    print(json.dumps(result) if args.json else _table(result))
    return 0


def _table(result: dict) -> str:
    how = (f'{result["cycles"]} interleaved cycles of {result["seconds"]:g} s windows '
           '(medians; ratios: median of the per-cycle ratios, min-max)' if result['cycles']
           else f'{result["seconds"]:g} s per run')
    lines = [f'engine frames/s on {result["cores"]} cores, num_threads {result["num_threads"]}, '
             f'OMP_WAIT_POLICY {result["omp_wait_policy"]}, {how}',
             '', '| backend | alone fps | beside PyTorch fps (ratio) | neighbour it/s | '
             f'beside {result["busy_loops"]} busy loops fps (ratio) | engine CPU per frame '
             '[ms]: alone / beside PyTorch |', '|---|---|---|---|---|---|']
    for row in result['rows']:
        neighbour = (row['beside_torch'].get('neighbours') or [{}])[0].get('rate')

        def ratio(key: str, row: dict = row) -> str:
            spread = row.get(f'{key}_ratio_range')
            text = f'{row[key]["fps"]:.1f} ({row[f"{key}_ratio"]:.0%}'
            return text + (f', {spread[0]:.0%}-{spread[1]:.0%})' if spread else ')')

        lines.append(
            f'| {row["backend"]} ({row["alone"]["detail"]}) | {row["alone"]["fps"]:.1f} | '
            f'{ratio("beside_torch")} | {neighbour if neighbour is not None else "-"} | '
            f'{ratio("beside_busy")} | {row["alone"]["cpu_ms_per_frame"]:.0f} / '
            f'{row["beside_torch"]["cpu_ms_per_frame"]:.0f} |')
    return '\n'.join(lines)


def _neighbours_env() -> dict[str, str]:
    """The environment of every process started here: torch's defaults, unless asked."""
    env = dict(os.environ)
    env.pop('OMP_WAIT_POLICY', None)
    env.pop('OMP_NUM_THREADS', None)
    return env


def _start_neighbours(args: argparse.Namespace, roles: list[str]) -> list[subprocess.Popen]:
    """Start the neighbour processes and wait until each is up and busy (its first line)."""
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), '--role', role,
                               '--input-size', str(args.input_size),
                               '--width', str(args.width), '--height', str(args.height)],
                              stdout=subprocess.PIPE, text=True, env=_neighbours_env())
             for role in roles]
    for proc in procs:
        if not proc.stdout.readline():
            raise RuntimeError(f'a neighbour exited early (code {proc.wait()})')
    return procs


def _stop_neighbours(procs: list[subprocess.Popen]) -> list[dict]:
    """Interrupt the neighbours (resumed first, if paused); their final reports.

    (Busy loops report nothing at the end: their "ready" line is not a report.)
    """
    for proc in procs:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
    reports = [json.loads(line) for proc in procs
               for line in proc.communicate(timeout=60)[0].strip().splitlines()[-1:]]
    return [report for report in reports if 'ready' not in report]


def _engine_command(args: argparse.Namespace, backend: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), '--role', 'engine', '--backend', backend,
            '--num-threads', str(args.num_threads), '--input-size', str(args.input_size),
            '--width', str(args.width), '--height', str(args.height),
            '--seconds', str(args.seconds), '--warmup-s', str(args.warmup_s),
            *(['--spin'] if args.spin else []), *extra]


def _run_engine(args: argparse.Namespace, backend: str, roles: list[str]) -> dict:
    """One engine run, with neighbour processes of these roles alive around its whole window."""
    procs = _start_neighbours(args, roles)
    try:
        out = subprocess.run(_engine_command(args, backend), env=_neighbours_env(), check=True,
                             capture_output=True, text=True).stdout
    finally:
        reports = _stop_neighbours(procs)
    result = json.loads(out.strip().splitlines()[-1])
    result['neighbours'] = reports
    return result


def _run_interleaved(args: argparse.Namespace, backend: str) -> dict:
    """One engine process; the neighbours paused and resumed around its windows."""
    procs = _start_neighbours(args, ['torch-neighbour'] + ['busy'] * args.busy)
    try:
        for proc in procs:
            proc.send_signal(signal.SIGSTOP)
        pids = {'alone': [], 'beside_torch': [procs[0].pid],
                'beside_busy': [proc.pid for proc in procs[1:]]}
        out = subprocess.run(
            _engine_command(args, backend, '--cycles', str(args.cycles), '--settle-s',
                            str(args.settle_s), '--pids', json.dumps(pids)),
            env=_neighbours_env(), check=True, capture_output=True, text=True).stdout
    finally:
        _stop_neighbours(procs)
    windows = json.loads(out.strip().splitlines()[-1])  # condition -> one result per cycle
    row = {'backend': backend}
    for key in CONDITIONS:
        row[key] = {'fps': statistics.median(w['fps'] for w in windows[key]),
                    'cpu_ms_per_frame': statistics.median(w['cpu_ms_per_frame']
                                                          for w in windows[key]),
                    'detail': windows[key][-1]['detail'], 'windows': windows[key]}
    for key in CONDITIONS[1:]:
        ratios = [w['fps'] / alone['fps']
                  for w, alone in zip(windows[key], windows['alone'], strict=True)]
        row[f'{key}_ratio'] = round(statistics.median(ratios), 3)
        row[f'{key}_ratio_range'] = [round(min(ratios), 3), round(max(ratios), 3)]
    return row


def _engine(args: argparse.Namespace) -> int:
    if args.spin:  # torch (OpenMP) loaded before our package: the library's default waiting
        import torch  # noqa: F401
    import numpy as np

    from metric_solver_ros.engine import DepthEngine

    engine = DepthEngine.from_checkpoint(None, device='cpu', precision='fp32',
                                         input_size=args.input_size, backend=args.backend,
                                         num_threads=args.num_threads)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)

    def window(seconds: float) -> dict:
        """Frames for ``seconds``: the rate and the process CPU time per frame."""
        frames, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            engine.infer(image, 10.0)
            frames += 1
        elapsed = time.perf_counter() - start
        cpu_ms = (time.process_time() - cpu_start) * 1e3 / max(frames, 1)
        return {'fps': round(frames / elapsed, 2), 'frames': frames,
                'cpu_ms_per_frame': round(cpu_ms, 1), 'detail': engine.backend_description}

    for _ in range(5):  # export / compile and warm-up
        engine.infer(image, 10.0)
    window(args.warmup_s)
    if not args.cycles:
        print(json.dumps(window(args.seconds)))
        return 0
    pids = json.loads(args.pids)
    everyone = [pid for key in CONDITIONS for pid in pids[key]]
    windows = {key: [] for key in CONDITIONS}
    for cycle in range(args.cycles):
        for i in range(len(CONDITIONS)):  # a rotating order: no condition always follows another
            key = CONDITIONS[(cycle + i) % len(CONDITIONS)]
            for pid in pids[key]:
                os.kill(pid, signal.SIGCONT)
            try:
                window(args.settle_s)
                before = _cpu_seconds(everyone)
                result = window(args.seconds)
                result['neighbours_cpu_s'] = round(_cpu_seconds(everyone) - before, 2)
                windows[key].append(result)
            finally:
                for pid in pids[key]:
                    os.kill(pid, signal.SIGSTOP)
    print(json.dumps(windows))
    return 0


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time [s] the processes have used so far (``/proc/PID/stat``: user + system)."""
    ticks = 0
    for pid in pids:
        with open(f'/proc/{pid}/stat') as stat:  # the fields after the command's ")"
            fields = stat.read().rsplit(')', 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf('SC_CLK_TCK')


def _torch_neighbour(args: argparse.Namespace) -> int:
    """The same encoder in a loop with torch's default threads and waiting, until SIGINT."""
    import torch

    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
    from metric_solver_ros.engine import network_input_size

    model = load_checkpoint(default_model_path()).float().eval()
    net_hw = network_input_size((args.height, args.width), args.input_size, 14)
    x = torch.randn(1, 3, *net_hw)
    with torch.inference_mode():
        model.encode(x)
    print(json.dumps({'role': 'torch-neighbour', 'ready': True}), flush=True)
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
    print(json.dumps({'role': 'busy', 'ready': True}), flush=True)
    try:
        while True:
            pass
    except KeyboardInterrupt:
        return 0


if __name__ == '__main__':
    sys.exit(main())
