"""Load and soak benchmark of the running node: a camera at a fixed rate, latency and memory.

Starts ``depth_node`` as its own process, publishes 640x480 rgb8 images (+ camera_info) from this
process at ``--rate`` Hz (or at ``--rate-factor`` times the rate the node reaches on its own,
measured first) for ``--duration`` seconds, and reports:

- frames published / answered (a depth image with the same stamp arrived), and what the node
  says of the same frames in ``depth_info`` (small messages: their count is what the node
  processed, whether or not this client kept up with the large answers; its stamp -> publish
  latency, inference time and skipped frames);
- end-to-end latency percentiles p50 / p95 / p99 (image stamp -> depth received, one clock),
  and with ``--points`` the same for the cloud (``cloud_latency_ms``);
- the latency trend: percentiles per time window and the least-squares slope of the p50 series
  [ms per minute], and the ratio of the last window's p99 to the first's;
- node RSS after warm-up and at the end, and its growth [%];
- with ``--profile``: where each of the node's threads spends the measured time, sampled with
  py-spy (this environment's, or on PATH; idle and waiting samples included, so shares are of
  wall time): per thread, the functions with the largest inclusive share of its samples
  (``profile_summary``).

Figures go to stdout (and ``--json FILE``); record them in benchmarks/RESULTS.md with the machine.

    python benchmarks/node_load.py --duration 60 --rate 30
    python benchmarks/node_load.py --duration 60 --rate-factor 2
    python benchmarks/node_load.py --duration 660 --rate-factor 1 --windows 11   # soak
    python benchmarks/node_load.py --rate 60 --points -p points_stride:=2   # more node parameters
"""

from __future__ import annotations

import argparse
import array
import collections
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from metric_solver_ros.node_client import (
    NodeProcess,
    close_spun_node,
    percentiles,
    stamp_ns,
    wait_for,
)


def cloud_latency(sent: list[int], clouds: list[tuple[int, int]]) -> dict:
    """Image stamp -> cloud received [ms] percentiles (p50 / p95 / p99) of the clouds answered."""
    sent_set = set(sent)
    latencies = [(receive - stamp) / 1e6 for stamp, receive in clouds if stamp in sent_set]
    return percentiles(latencies, ndigits=2)


def rss_mb(pid: int) -> float:
    """Resident set size of a process [MiB] (Linux /proc)."""
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    return float('nan')


class LoadClient:
    """Publishes images at a rate and records (stamp, receive time) of the depth answers."""

    def __init__(self, namespace: str, points: bool = False) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from metric_solver_ros.msg import DepthInfo

        self.node = Node(f'load_camera_{os.getpid()}')
        self.pub_image = self.node.create_publisher(Image, f'{namespace}/image',
                                                    qos_profile_sensor_data)
        self.pub_info = self.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                                   qos_profile_sensor_data)
        self.answers: list[tuple[int, int]] = []  # (stamp ns, receive ns)
        self.node.create_subscription(Image, f'{namespace}/depth', self._on_depth, 10)
        self.clouds: list[tuple[int, int]] = []  # (stamp ns, receive ns) of the PointCloud2
        # answers (with ``points``)
        self.cloud_size: list[int] | None = None  # [width, height] of the last cloud
        self.infos: list[tuple[int, float, float, int]] = []  # (stamp ns, latency ms,
        # inference ms, frames skipped so far) from the node's depth_info
        self.node.create_subscription(DepthInfo, f'{namespace}/depth_info', self._on_info, 100)
        if points:  # the node builds the cloud only while someone subscribes
            self.node.create_subscription(PointCloud2, f'{namespace}/points', self._on_cloud, 10)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()
        self._image = Image()
        self._info = CameraInfo()

    def _on_depth(self, msg) -> None:
        self.answers.append((stamp_ns(msg), time.time_ns()))

    def _on_info(self, msg) -> None:
        self.infos.append((stamp_ns(msg), msg.latency_ms, msg.inference_ms, msg.frames_skipped))

    def _on_cloud(self, msg) -> None:
        self.clouds.append((stamp_ns(msg), time.time_ns()))
        self.cloud_size = [msg.width, msg.height]

    def prepare(self, rgb: np.ndarray, intrinsics) -> None:
        """Build the messages once; each publish only restamps them."""
        height, width = rgb.shape[:2]
        self._image.height, self._image.width, self._image.encoding = height, width, 'rgb8'
        self._image.step = width * 3
        self._image.header.frame_id = self._info.header.frame_id = 'camera_optical'
        buffer = array.array('B')
        buffer.frombytes(np.ascontiguousarray(rgb).tobytes())
        self._image.data = buffer
        fx, fy, cx, cy = intrinsics
        self._info.width, self._info.height = width, height
        self._info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]

    def publish(self) -> int:
        """Publish camera_info + image stamped now; return the stamp [ns]."""
        stamp = time.time_ns()
        sec, nanosec = divmod(stamp, 1_000_000_000)
        for msg in (self._info, self._image):
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
        self.pub_info.publish(self._info)
        self.pub_image.publish(self._image)
        return stamp

    def stream(self, rate_hz: float, duration_s: float) -> list[int]:
        """Publish at ``rate_hz`` for ``duration_s``; return the stamps sent."""
        period = 1.0 / rate_hz
        start = time.monotonic()
        sent = []
        while time.monotonic() - start < duration_s:
            sent.append(self.publish())
            next_time = start + len(sent) * period
            time.sleep(max(0.0, next_time - time.monotonic()))
        return sent

    def close(self) -> None:
        """Stop spinning and destroy the node."""
        close_spun_node(self.node, self._executor, self._thread)


def node_side(sent: list[int], infos: list[tuple[int, float, float, int]]) -> dict:
    """What the node's ``depth_info`` says of the frames in ``sent``."""
    sent_set = set(sent)
    mine = [info for info in infos if info[0] in sent_set]
    if not mine:
        return {'node_answered': 0}
    return {'node_answered': len(mine),
            'node_latency_ms': percentiles([i[1] for i in mine], (50, 99), ndigits=2),
            'inference_ms': percentiles([i[2] for i in mine], (50, 99), ndigits=2),
            'node_frames_skipped': mine[-1][3] - mine[0][3]}


_GENERIC_FILES = ('threading.py', '<frozen runpy>', 'torch/nn/modules/module.py',
                  'torch/utils/_contextlib.py')


def profile_summary(raw: str, top: int = 20) -> dict[str, dict]:
    """Per thread of a py-spy ``--format raw --threads`` profile: samples and top functions.

    Args:
        raw: py-spy's raw (collapsed-stack) output: ``thread (TID): NAME;frame;frame N`` lines.
        top: Functions kept per thread.

    Returns:
        Thread name -> ``{'samples': n, 'top': [[function, share of the thread's samples],
        ...]}``; a function counts once per sample however often it is on the stack
        (inclusive); frames of threading, runpy and torch's ``Module.__call__`` are left out.
    """
    samples: collections.Counter = collections.Counter()
    inclusive: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(' ')
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(';')
        name = thread.split(': ', 1)[-1].strip() or thread
        samples[name] += int(count)
        functions = {frame.split(' (')[0] for frame in frames
                     if not any(f'({g}' in frame or f'/{g}' in frame for g in _GENERIC_FILES)}
        for function in functions - {'<module>'}:
            inclusive[name][function] += int(count)
    return {name: {'samples': n,
                   'top': [[f, round(c / n, 3)] for f, c in inclusive[name].most_common(top)]}
            for name, n in samples.most_common()}


def find_py_spy() -> str | None:
    """The py-spy executable beside this interpreter (its venv), else on PATH, else None."""
    beside = pathlib.Path(sys.executable).with_name('py-spy')
    return str(beside) if beside.is_file() else shutil.which('py-spy')


def start_profile(exe: str, pid: int, duration_s: float, out: pathlib.Path) -> subprocess.Popen:
    """Start py-spy (``exe``) sampling process ``pid`` for ``duration_s`` into ``out`` (raw)."""
    return subprocess.Popen(
        [exe, 'record', '--pid', str(pid), '--duration', str(max(1, round(duration_s))),
         '--rate', '200', '--format', 'raw', '--threads', '--idle', '--nonblocking',
         '--output', str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def summarise(sent: list[int], answers: list[tuple[int, int]], windows: int) -> dict:
    """Latency statistics and trend of one run."""
    sent_set = set(sent)
    latencies = {s: (r - s) / 1e6 for s, r in answers if s in sent_set}
    answered = sorted(latencies)
    result = {
        'published': len(sent), 'answered': len(answered),
        'answered_fraction': round(len(answered) / max(len(sent), 1), 4),
        'latency_ms': percentiles([latencies[s] for s in answered], ndigits=2),
    }
    if len(answered) >= 2 * windows:
        t0 = sent[0]
        chunks = np.array_split(np.array(answered), windows)
        series = []
        for chunk in chunks:
            series.append({'t_s': round(float((chunk[0] - t0) / 1e9), 1),
                           **percentiles([latencies[s] for s in chunk], (50, 99), ndigits=2)})
        t_min = np.array([w['t_s'] for w in series]) / 60.0
        p50 = np.array([w['p50'] for w in series])
        slope = float(np.polyfit(t_min, p50, 1)[0]) if len(series) > 1 else 0.0
        result['windows'] = series
        result['p50_slope_ms_per_min'] = round(slope, 3)
        result['p99_last_over_first'] = round(series[-1]['p99'] / series[0]['p99'], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--checkpoint', default='', help='empty = the bundled default model')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='auto')
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate [Hz]')
    parser.add_argument('--rate-factor', type=float, default=None,
                        help='publish at this multiple of the node\'s own rate (measured first)')
    parser.add_argument('--duration', type=float, default=60.0, help='measured time [s]')
    parser.add_argument('--warmup', type=float, default=10.0, help='unmeasured start [s]')
    parser.add_argument('--windows', type=int, default=6, help='windows of the latency trend')
    parser.add_argument('--points', action='store_true',
                        help='publish_points:=true and subscribe to the cloud too (the node '
                             'builds it only for a subscriber)')
    parser.add_argument('--cuda-graphs', action='store_true',
                        help='node parameter cuda_graphs:=true (CUDA only)')
    parser.add_argument('-p', '--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='another node parameter, e.g. input_size:=[98,126] (repeatable)')
    parser.add_argument('--profile', action='store_true',
                        help='sample the node with py-spy during the measured stream')
    parser.add_argument('--json', default=None, help='write the result here too')
    args = parser.parse_args(argv)
    py_spy = find_py_spy() if args.profile else None
    if args.profile and py_spy is None:
        parser.error('--profile needs py-spy in this environment or on PATH (pip install '
                     'py-spy; requirements.txt has it)')

    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    import rclpy

    from metric_solver_ros.demo import camera_sample

    namespace = '/load'
    ros_args = ['-r', f'__ns:={namespace}', '-p', f'device:={args.device}',
                '-p', f'precision:={args.precision}',
                '-p', f'publish_points:={str(args.points).lower()}']
    if args.checkpoint:
        ros_args += ['-p', f'checkpoint:={args.checkpoint}']
    if args.cuda_graphs:
        ros_args += ['-p', 'cuda_graphs:=true']
    for param in args.param:
        ros_args += ['-p', param]
    log = pathlib.Path(tempfile.mkdtemp(prefix='node_load_')) / 'node.log'
    node = NodeProcess(ros_args, log)
    rclpy.init()
    client = None
    try:
        client = LoadClient(namespace, points=args.points)
        if not wait_for(lambda: client.pub_image.get_subscription_count() > 0
                        and client.node.count_publishers(f'{namespace}/depth') > 0
                        and (not args.points
                             or client.node.count_publishers(f'{namespace}/points') > 0),
                        120.0):
            print(node.output(), file=sys.stderr)
            return 1
        rgb, intrinsics, frame = camera_sample(640, 480)
        client.prepare(rgb, intrinsics)
        # Warm-up at the requested rate (or flat out), then measure the node's own rate.
        warm_rate = args.rate if args.rate_factor is None else 100.0
        warm = client.stream(warm_rate, args.warmup)
        own_rate = len([1 for s, _ in client.answers if s in set(warm)]) / args.warmup
        rate = args.rate if args.rate_factor is None else max(1.0, args.rate_factor * own_rate)
        time.sleep(1.0)
        rss_start = rss_mb(node.process.pid)
        client.answers.clear()
        client.clouds.clear()
        client.infos.clear()
        profile_path = log.with_name('profile.txt')
        profiler = (start_profile(py_spy, node.process.pid, args.duration, profile_path)
                    if py_spy else None)
        sent = client.stream(rate, args.duration)
        profile = None
        if profiler is not None:  # a failed profile (e.g. no ptrace permission) is reported,
            output, _ = profiler.communicate(timeout=60)  # the load figures still count
            if profiler.returncode == 0 and profile_path.is_file():
                profile = profile_summary(profile_path.read_text())
            else:
                profile = {'error': f'py-spy exited {profiler.returncode}: {output[-1000:]}'}
        time.sleep(2.0)
        rss_end = rss_mb(node.process.pid)
        result = summarise(sent, list(client.answers), args.windows)
        result.update(node_side(sent, list(client.infos)))
        result.update({
            'rate_hz': round(rate, 2), 'node_own_rate_hz': round(own_rate, 2),
            'duration_s': args.duration, 'image': [rgb.shape[1], rgb.shape[0]], 'frame': frame,
            'rss_mb': {'start': round(rss_start, 1), 'end': round(rss_end, 1),
                       'growth_pct': round(100.0 * (rss_end / rss_start - 1.0), 2)},
            'points': args.points,
            'clouds_received': (len({s for s, _ in client.clouds} & set(sent)) if args.points
                                else None),
            'cloud_latency_ms': cloud_latency(sent, list(client.clouds)) if args.points else None,
            'cloud_size': client.cloud_size,
            'profile': profile,
            'device': args.device, 'cuda_graphs': args.cuda_graphs,
            'checkpoint': args.checkpoint or 'bundled default', 'params': args.param,
            'transport': os.environ.get('FASTDDS_BUILTIN_TRANSPORTS', 'default'),
        })
        print(json.dumps(result, indent=2))
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        # The node first: once the peer that sends the large messages (depth, clouds) is gone,
        # deleting the client's DDS participant cannot meet a LARGE_DATA channel mid-read (the
        # Fast DDS 3.2 deadlock, README "Transport").
        node.stop()
        if client is not None:
            client.close()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == '__main__':
    sys.exit(main())
