"""The node's own work per frame, outside the engine, against the engine's time, in one run.

What ``MetricSolverNode`` does around ``engine.infer`` for a 640x480 rgb8 frame with every output
subscribed: image message -> array, building the depth (32FC1) and mask (mono8) messages, the
organised PointCloud2 (``--stride``, with colour) and the DepthInfo statistics. No DDS: this
separates the node's Python work from transport and scheduling (``benchmarks/node_load.py``).

The cloud three ways, same run: from the engine's packed cloud (``DepthResult.cloud``, packed
where the depth is: what the node sends now), packed on the host (``conversions.pack_cloud``,
OpenCV), and packed as before issue 23 (numpy field by field, ``legacy_pack_cloud`` here); plus
the serialisation rclpy does in ``publish``.

    python benchmarks/node_overhead.py [--threads 2] [--iters 20] [--stride 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def legacy_pack_cloud(xyz_m: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """The host packing before issue 23 (numpy structured fields), for comparison only."""
    from metric_solver_ros.conversions import cloud_dtype

    points = np.empty(xyz_m.shape[:-1], dtype=cloud_dtype(True))
    points['x'], points['y'], points['z'] = xyz_m[..., 0], xyz_m[..., 1], xyz_m[..., 2]
    rgb = rgb.astype(np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    points['rgb'] = packed.astype(np.uint32).view(np.float32)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--stride', type=int, default=2, help='points_stride of the cloud')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from metric_solver_ros import messages
    from metric_solver_ros.checkpoint import default_model_path, load_checkpoint
    from metric_solver_ros.conversions import image_to_rgb
    from metric_solver_ros.engine import DepthEngine, PointsRequest

    engine = DepthEngine(load_checkpoint(default_model_path()), device='cpu')
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    msg = Image(height=480, width=640, encoding='rgb8', step=640 * 3)
    msg.data = messages.as_uint8_array(rgb)
    points = PointsRequest(intrinsics=(500.0, 500.0, 320.0, 240.0), stride=args.stride,
                           with_rgb=True)
    header = Header()

    def ms(work) -> float:
        work()
        start = time.perf_counter()
        for _ in range(args.iters):
            work()
        return (time.perf_counter() - start) / args.iters * 1e3

    result = engine.infer(rgb, (10.0,), points=points)
    depth = result.depth_m

    stages = {
        'image_to_rgb': lambda: image_to_rgb(msg),
        'depth_msg': lambda: messages.depth_msg(header, depth),
        'mask_msg': lambda: messages.mask_msg(header, result.near),
        'cloud_msg': lambda: messages.cloud_msg(header, result.points_m, result.points_rgb,
                                                result.cloud),
        'depth_info_stats': lambda: messages.depth_statistics(depth, result.near),
    }
    times = {name: ms(work) for name, work in stages.items()}
    cloud = messages.cloud_msg(header, result.points_m, result.points_rgb, result.cloud)
    from rclpy.serialization import serialize_message

    from metric_solver_ros.conversions import pack_cloud

    compare = {
        'cloud: host pack (OpenCV)': lambda: messages.cloud_msg(header, result.points_m,
                                                                result.points_rgb),
        'cloud: numpy pack (before)': lambda: messages.as_uint8_array(
            legacy_pack_cloud(result.points_m, result.points_rgb)),
        'cloud: pack only, OpenCV': lambda: pack_cloud(result.points_m, result.points_rgb),
        'cloud: serialise': lambda: serialize_message(cloud),
    }
    extra = {name: ms(work) for name, work in compare.items()}
    engine_ms = ms(lambda: engine.infer(rgb, (10.0,), points=points))
    overhead_ms = sum(times.values())
    for name, value in times.items():
        print(f'{name:18s} {value:7.2f} ms')
    print(f'{"node work, total":18s} {overhead_ms:7.2f} ms')
    print(f'{"engine.infer":18s} {engine_ms:7.2f} ms (with the cloud)')
    print(f'node work / engine: {overhead_ms / engine_ms:.3f}')
    print(f'cloud {cloud.width}x{cloud.height}, {len(cloud.data) / 1e6:.1f} MB:')
    for name, value in extra.items():
        print(f'  {name:28s} {value:7.2f} ms')
    before = extra['cloud: numpy pack (before)']
    print(f'  engine-packed cloud_msg / numpy packing before: {times["cloud_msg"] / before:.3f}')


if __name__ == '__main__':
    main()
