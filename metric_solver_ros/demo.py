"""``make demo``: the node on the bundled model, a short camera stream, the anchor slid mid-stream.

Starts ``depth_node`` as its own process (like ``ros2 launch`` would), plays real RGB camera
samples (../shared/realdata when present) and synthetic scenes into it as ``image`` +
``camera_info`` at a fixed rate, moves the anchor through the ``set_anchor`` service
(2 m -> 10 m -> 40 m by default), and writes what came back under ``--out``: colour-mapped depth
with a metric colour bar and the anchor mask per anchor phase, a PLY of the last point cloud, and
``summary.json`` / ``summary.md`` (frames answered, end-to-end latency, anchors reported).

    python -m metric_solver_ros.demo --out out/demo [--device auto] [--checkpoint FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

REALDATA = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'realdata'


CAMERA_SAMPLE = 'nyu_m3d_00000'
"""The real image (of ``REALDATA``) that stands for "a camera frame" in tests and benchmarks."""


def realdata_images(ids: set[str] | None = None) -> list[tuple[str, np.ndarray, tuple]]:
    """The RGB images of ``REALDATA``'s manifest: ``(id, rgb uint8 [H, W, 3], (fx, fy, cx, cy))``.

    Args:
        ids: Only these sample ids (default: all).

    Returns:
        The readable samples in manifest order; empty when this checkout has no ``REALDATA``
        or OpenCV is missing (the GPU kit carries none).
    """
    manifest = REALDATA / 'manifest.json'
    try:
        import cv2
    except ImportError:
        return []
    if not manifest.is_file():
        return []
    samples = []
    for sample in json.loads(manifest.read_text())['samples']:
        if ids is not None and sample['id'] not in ids:
            continue
        bgr = cv2.imread(str(REALDATA / sample['rgb']), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        k = sample['intrinsics']
        samples.append((sample['id'], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                        (k['fx'], k['fy'], k['cx'], k['cy'])))
    return samples


def camera_sample(width: int = 640, height: int = 480,
                  seed: int = 0) -> tuple[np.ndarray, tuple[float, float, float, float], str]:
    """A camera frame for tests and benchmarks: ``(rgb uint8 [H, W, 3], (fx, fy, cx, cy), name)``.

    The real ``CAMERA_SAMPLE`` (NYU Depth v2, 640x480) resized to ``width`` x ``height`` with
    its intrinsics scaled [px], or, where the sample or OpenCV is absent (a clone without
    ../shared, the GPU kit), the synthetic indoor scene ``seed`` at that size.
    """
    samples = realdata_images({CAMERA_SAMPLE})
    if samples:
        import cv2

        name, rgb, (fx, fy, cx, cy) = samples[0]
        sx, sy = width / rgb.shape[1], height / rgb.shape[0]
        if (sx, sy) != (1.0, 1.0):
            rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        return rgb, (fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5), name
    from metric_solver_ros.data.synthetic import render_scene

    scene = render_scene('indoor', seed, height, width)
    return scene.image, scene.intrinsics, f'synthetic_indoor_{seed}'


def demo_frames(count: int, height: int = 480, width: int = 640):
    """Yield ``(name, rgb uint8 [H, W, 3], (fx, fy, cx, cy))`` for the stream."""
    samples = realdata_images()
    from metric_solver_ros.data.synthetic import render_scene

    for i in range(count):
        if samples and i % 2 == 0:
            yield samples[(i // 2) % len(samples)]
        else:
            kind = 'indoor' if (i // 2) % 2 == 0 else 'outdoor'
            scene = render_scene(kind, seed=1000 + i, height=height, width=width)
            yield f'synthetic_{kind}_{1000 + i}', scene.image, scene.intrinsics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options of the demo."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='out/demo', help='output folder')
    parser.add_argument('--frames', type=int, default=36, help='images to play')
    parser.add_argument('--rate', type=float, default=4.0, help='images per second')
    parser.add_argument('--anchors', type=float, nargs='+', default=[2.0, 10.0, 40.0],
                        help='anchors [m] set through the service, in equal parts of the stream')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--checkpoint', default='', help='empty = the bundled default model')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return a process exit code."""
    args = parse_args(argv)
    from metric_solver_ros.checkpoint import default_model_path

    if not args.checkpoint and not default_model_path().is_file():
        print(f'make demo: the bundled default model is not there yet ({default_model_path()}); '
              f'it is trained by the training pipeline (issue 6). Pass --checkpoint FILE to '
              f'run the demo on another model.', file=sys.stderr)
        return 2
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
    import rclpy

    from metric_solver_ros.node_client import (
        DepthNodeClient,
        NodeProcess,
        publish_until,
        stamp_ns,
        wait_for,
    )
    from metric_solver_ros.srv import SetAnchor

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    namespace = '/demo_camera'
    ros_args = ['-r', f'__ns:={namespace}', '-p', f'device:={args.device}',
                '-p', f'anchor:={args.anchors[0]}', '-p', 'points_stride:=2']
    if args.checkpoint:
        ros_args += ['-p', f'checkpoint:={args.checkpoint}']
    print(f'demo: starting depth_node (log: {out / "node.log"})')
    node = NodeProcess(ros_args, out / 'node.log')
    rclpy.init()
    client = None
    try:
        client = DepthNodeClient(namespace, name='demo')
        if not client.wait_ready(120.0):
            print(node.output(), file=sys.stderr)
            print('demo: the node did not come up', file=sys.stderr)
            return 1
        frames = list(demo_frames(args.frames))
        # Warm-up (not counted): the first best-effort images can be lost while the transport
        # connects, and the first inference is slow; send one frame until it is answered.
        name, rgb, intrinsics = frames[0]
        warm_stamp = time.time_ns()
        publish_until(lambda: (client.publish_camera_info(rgb.shape[1], rgb.shape[0], intrinsics,
                                                          warm_stamp),
                               client.publish_image(rgb, warm_stamp)),
                      lambda: any(stamp_ns(m) == warm_stamp
                                  for m in client.messages('depth_info')), 60.0)
        client.clear()
        phase_len = max(1, len(frames) // len(args.anchors))
        sent: dict[int, tuple[str, float, np.ndarray]] = {}
        timeline = []
        period = 1.0 / args.rate
        start = time.monotonic()
        for i, (name, rgb, intrinsics) in enumerate(frames):
            phase = min(i // phase_len, len(args.anchors) - 1)
            if i % phase_len == 0 and i // phase_len < len(args.anchors):
                response = client.call(client.set_anchor, SetAnchor.Request(
                    anchor=args.anchors[phase]))
                timeline.append({'frame': i, 'requested_m': args.anchors[phase],
                                 'success': bool(response and response.success),
                                 'in_effect_m': float(response.anchor) if response else None})
                print(f'demo: frame {i}: set_anchor {args.anchors[phase]:g} m -> '
                      f'{"ok" if response and response.success else "refused"}')
            stamp = time.time_ns()
            client.publish_camera_info(rgb.shape[1], rgb.shape[0], intrinsics, stamp)
            client.publish_image(rgb, stamp)
            sent[stamp] = (name, args.anchors[phase], rgb)
            time.sleep(max(0.0, start + (i + 1) * period - time.monotonic()))
        wait_for(lambda: len(client.messages('depth_info')) >= len(sent), 10.0)
        return _write_outputs(out, client, sent, timeline, args)
    finally:
        if client is not None:
            client.close()
        code, _ = node.stop()
        if rclpy.ok():
            rclpy.shutdown()


def _write_outputs(out: pathlib.Path, client, sent: dict, timeline: list,
                   args: argparse.Namespace) -> int:
    from metric_solver_ros.node_client import cloud_xyz, image_array, stamp_ns
    from metric_solver_ros.visualize import depth_figure, write_ply, write_rgb_png

    def first_per_stamp(key: str) -> dict:
        # A frame's first answer; a later one with the same stamp is the re-decode that follows
        # an anchor change (redecode_on_anchor_change), reported with the new anchor.
        found: dict = {}
        for msg in client.messages(key):
            found.setdefault(stamp_ns(msg), msg)
        return found

    infos, depths = first_per_stamp('depth_info'), first_per_stamp('depth')
    masks, clouds = first_per_stamp('anchor_mask'), first_per_stamp('points')
    rows, saved = [], {}
    for stamp, (name, anchor, rgb) in sent.items():
        info = infos.get(stamp)
        rows.append({'frame': name, 'requested_anchor_m': anchor,
                     'answered': info is not None,
                     'anchor_m': float(info.anchor) if info else None,
                     'latency_ms': float(info.latency_ms) if info else None,
                     'inference_ms': float(info.inference_ms) if info else None,
                     'near_fraction': float(info.near_fraction) if info else None,
                     'median_depth_m': float(info.median_depth) if info else None})
        if info is not None and stamp in depths and anchor not in saved:
            saved[anchor] = stamp
            depth = image_array(depths[stamp])
            tag = f'anchor_{anchor:g}m'
            write_rgb_png(out / f'{tag}_input.png', rgb)
            write_rgb_png(out / f'{tag}_depth.png', depth_figure(depth))
            if stamp in masks:
                write_rgb_png(out / f'{tag}_mask.png',
                              np.repeat(image_array(masks[stamp])[..., None], 3, axis=2))
    if clouds:
        stamp = max(clouds)
        xyz = cloud_xyz(clouds[stamp])
        rgb = sent[stamp][2][::2, ::2][:xyz.shape[0], :xyz.shape[1]] if stamp in sent else None
        points = write_ply(out / 'cloud.ply', xyz, rgb)
    else:
        points = 0
    answered = [r for r in rows if r['answered']]
    # frames_skipped counts from the node's start: the demo's own is the growth over its frames
    counts = [int(m.frames_skipped) for m in infos.values()]
    skipped = max(counts) - min(counts) if counts else 0
    latencies = np.array([r['latency_ms'] for r in answered]) if answered else np.array([np.nan])
    summary = {
        'frames_sent': len(rows), 'frames_answered': len(answered),
        'frames_skipped_by_node': skipped,
        'latency_ms': {'p50': float(np.percentile(latencies, 50)),
                       'p95': float(np.percentile(latencies, 95)),
                       'max': float(np.max(latencies))},
        'anchor_timeline': timeline, 'cloud_points': points, 'frames': rows,
        'rate_hz': args.rate, 'device': args.device,
        'checkpoint': args.checkpoint or 'bundled default model',
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    lines = ['# metric_solver_ros demo', '',
             f'- frames answered: {len(answered)} / {len(rows)} at {args.rate:g} Hz '
             f'({skipped} skipped by the busy node: it always works on the latest image)',
             f'- end-to-end latency (image stamp -> depth_info): p50 '
             f'{summary["latency_ms"]["p50"]:.1f} ms, p95 {summary["latency_ms"]["p95"]:.1f} ms',
             f'- point cloud: {points} points in cloud.ply', '',
             '| anchor requested [m] | frames | anchor reported [m] | median depth [m] | '
             'near fraction |', '|---|---|---|---|---|']
    for anchor in args.anchors:
        phase = [r for r in answered if r['requested_anchor_m'] == anchor]
        if phase:
            lines.append(f'| {anchor:g} | {len(phase)} | {phase[-1]["anchor_m"]:g} | '
                         f'{np.median([r["median_depth_m"] for r in phase]):.2f} | '
                         f'{np.mean([r["near_fraction"] for r in phase]):.2f} |')
    lines += ['', 'Pictures per anchor: `anchor_<A>m_input.png`, `_depth.png` (log colour scale, '
              'black = +inf), `_mask.png` (white = inside the anchor).']
    (out / 'summary.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    print(f'demo: outputs in {out}/')
    return 0 if answered else 1


if __name__ == '__main__':
    sys.exit(main())
