"""How long the node takes to exit after SIGTERM, idle and in the middle of a slow frame.

Starts ``depth_node`` (bundled model, CPU) as its own process, waits until it is ready, then
sends SIGTERM either while it is idle or one second after an image that takes ~4 s to process
(``input_size`` 1400) was sent, and times signal -> process exit. Exit codes other than 0 are
printed (before the explicit context release + ``os._exit`` of ``node.main``, the slow-frame
case aborted with -6).

    python benchmarks/node_exit.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import signal
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    import rclpy

    from metric_solver_ros.data.synthetic import render_scene
    from metric_solver_ros.node_client import DepthNodeClient, NodeProcess

    rgb = render_scene('indoor', 0, 480, 640).image
    log = pathlib.Path(tempfile.mkdtemp(prefix='node_exit_')) / 'node.log'
    rclpy.init()
    try:
        for case, extra in (('idle', []), ('slow frame', ['-p', 'input_size:=1400'])):
            times, codes = [], []
            for _ in range(args.runs):
                node = NodeProcess(['-r', '__ns:=/exit', '-p', 'device:=cpu', *extra], log)
                client = DepthNodeClient('/exit')
                try:
                    if not client.wait_ready(60.0, node.alive):
                        raise SystemExit(node.output())
                    if extra:
                        for stamp in range(1, 11):  # best-effort: the first to arrive starts
                            client.publish_image(rgb, stamp)
                            time.sleep(0.1)
                    code, elapsed = node.stop(signal.SIGTERM, timeout_s=10.0)
                finally:
                    client.close()
                times.append(elapsed)
                codes.append(code)
            print(f'{case:10s}: SIGTERM -> exit median {statistics.median(times):.3f} s '
                  f'(max {max(times):.3f} s), exit codes {codes}')
    finally:
        rclpy.shutdown()


if __name__ == '__main__':
    main()
