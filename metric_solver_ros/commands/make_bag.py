r"""``metric-solver make-bag``: write an RGB-D rosbag2 (image, camera_info, GT depth).

Examples::

    metric-solver make-bag --out demo_bag --synthetic indoor --seed 0 --frames 20 --size 240 320
    metric-solver make-bag --out nyu_bag --storage sqlite3 --folder /data/nyu_rgbd --compressed
    metric-solver make-bag --out walk_bag --synthetic-sequence indoor --motion forward \
        --frames 30 --seed 7 --size 240 320
    metric-solver make-bag --out lidar_bag --synthetic indoor --frames 20 --lidar \
        --lidar-offset 0.05 -0.1 0.03 --lidar-rpy 0 -5 10 --world-scale 0.5

Frame ``i`` is stamped ``start + i / rate`` (header stamp and log time) on every topic. Topics:
``--image-topic`` (``rgb8`` Image, or JPEG CompressedImage on ``<image-topic>/compressed`` with
``--compressed``), ``--info-topic`` (CameraInfo, for frames with known intrinsics) and
``--depth-topic`` (``32FC1`` metres or ``16UC1`` millimetres). ``--synthetic`` renders a new
scene per frame (seeds ``--seed``, ``--seed + 1``, ...); ``--synthetic-sequence`` one camera
moving through one scene (``data/synthetic/sequence.py``; sampled at ``--rate``), with the exact
camera pose per frame on ``/tf`` (``--world-frame`` -> ``--frame-id``). With ``--lidar``
(``--synthetic`` only) also a LiDAR ``PointCloud2`` on ``--lidar-topic`` and the mount on
``/tf_static`` (``metric_solver_ros.data.synthetic_lidar``: the scanner model);
``--world-scale`` multiplies every length of the ``--synthetic`` scenes (same images, scaled
metric depth).
"""

from __future__ import annotations

import argparse
import pathlib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver make-bag``."""
    parser.add_argument('--out', type=pathlib.Path, required=True,
                        help='bag directory to create (must not exist)')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap',
                        help='rosbag2 storage plugin (default: %(default)s)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--folder', type=pathlib.Path,
                        help='RGB-D folder dataset root (see metric_solver_ros.data)')
    source.add_argument('--synthetic', choices=('indoor', 'outdoor'),
                        help='render synthetic scenes, a new one per frame')
    source.add_argument('--synthetic-sequence', choices=('indoor', 'outdoor'),
                        help='render a camera moving through one synthetic scene (with /tf)')
    parser.add_argument('--motion', choices=('static', 'pan', 'forward'), default=None,
                        help='camera motion of --synthetic-sequence')
    parser.add_argument('--seed', type=int, default=0,
                        help='first synthetic scene seed, or the sequence seed')
    parser.add_argument('--frames', type=int, default=None,
                        help='number of frames (synthetic default 10; folder default all)')
    parser.add_argument('--size', type=int, nargs=2, default=(240, 320), metavar=('H', 'W'),
                        help='synthetic image size [px] (default: 240 320)')
    parser.add_argument('--rate', type=float, default=10.0,
                        help='frame rate [Hz] of the stamps (default: %(default)s)')
    parser.add_argument('--compressed', action='store_true',
                        help='write the image as JPEG CompressedImage on <image-topic>/compressed')
    parser.add_argument('--depth-encoding', choices=('32FC1', '16UC1'), default='32FC1',
                        help='GT depth encoding: metres or millimetres; 16UC1 holds at most '
                             '65.535 m and drops farther GT, with a warning (default: %(default)s)')
    parser.add_argument('--image-topic', default='/camera/color/image_raw')
    parser.add_argument('--depth-topic', default='/camera/depth/image_raw')
    parser.add_argument('--info-topic', default='/camera/color/camera_info')
    parser.add_argument('--frame-id', default='camera_color_optical_frame')
    parser.add_argument('--tf-topic', default='/tf', help='camera poses of a sequence')
    parser.add_argument('--world-frame', default='map',
                        help='parent frame of the camera poses (default: %(default)s)')
    parser.add_argument('--world-scale', type=float, default=1.0,
                        help='synthetic: multiply every length of the scenes (depth scales, the '
                             'images stay; default: %(default)s)')
    _add_lidar_arguments(parser)


def _add_lidar_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--lidar*`` options; defaults are ``LidarScanner``'s (light: no torch import)."""
    from metric_solver_ros.data.synthetic_lidar import LidarScanner

    scanner = LidarScanner()
    lidar = parser.add_argument_group('LiDAR (with --synthetic): a spinning scanner beside the '
                                      'camera, its cloud and the mount on /tf_static')
    lidar.add_argument('--lidar', action='store_true', help='write a LiDAR cloud and /tf_static')
    lidar.add_argument('--lidar-topic', default='/lidar/points', help='PointCloud2 topic')
    lidar.add_argument('--lidar-frame', default='lidar_link', help="the cloud's frame")
    lidar.add_argument('--lidar-rings', type=int, default=scanner.rings,
                       help='beams (default: %(default)s)')
    lidar.add_argument('--lidar-elevation', type=float, nargs=2, metavar=('LO', 'HI'),
                       default=scanner.elevation_deg,
                       help='lowest and highest beam elevation [deg] (default: %(default)s)')
    lidar.add_argument('--lidar-azimuth-step', type=float, default=scanner.azimuth_step_deg,
                       help='angle between samples of a ring [deg] (default: %(default)s)')
    lidar.add_argument('--lidar-range', type=float, nargs=2, metavar=('MIN', 'MAX'),
                       default=scanner.range_m, help='range of a return [m] (default: %(default)s)')
    lidar.add_argument('--lidar-offset', type=float, nargs=3, metavar=('X', 'Y', 'Z'),
                       default=scanner.offset_m,
                       help='LiDAR origin in the camera optical frame (x right, y down, z '
                            'forward) [m] (default: %(default)s)')
    lidar.add_argument('--lidar-rpy', type=float, nargs=3, metavar=('ROLL', 'PITCH', 'YAW'),
                       default=scanner.rpy_deg,
                       help='LiDAR rotation about its own x, y, z axes from upright, looking '
                            'along the optical axis [deg] (default: %(default)s)')


def run(args: argparse.Namespace) -> int:
    """Write the bag; return 0, or raise ValueError / FileNotFoundError."""
    from metric_solver_ros.bagio import write_rgbd_bag

    if args.frames is not None and args.frames < 1:
        raise ValueError(f'--frames must be >= 1, got {args.frames}')
    if args.out.exists():
        raise ValueError(f'{args.out} exists; remove it or choose another --out')
    if (args.lidar or args.world_scale != 1.0) and not args.synthetic:
        raise ValueError('--lidar and --world-scale need --synthetic (the scanner and the scale '
                         'act on its scenes, a new one per frame)')
    if args.lidar or args.world_scale != 1.0:
        return _run_synthetic_robot(args)
    if (args.motion is None) != (args.synthetic_sequence is None):
        raise ValueError('--motion goes with --synthetic-sequence, and it needs one')
    if args.synthetic_sequence:
        from metric_solver_ros.data.synthetic import render_sequence, sequence_spec

        height, width = args.size
        count = 10 if args.frames is None else args.frames
        sequence = sequence_spec(args.synthetic_sequence, args.motion, count, args.seed,
                                 rate_hz=args.rate)
        frames = render_sequence(sequence, height, width)
    elif args.synthetic:
        from metric_solver_ros.data.synthetic import render_scene

        height, width = args.size
        count = 10 if args.frames is None else args.frames
        frames = (render_scene(args.synthetic, args.seed + i, height, width)
                  for i in range(count))
    else:
        from metric_solver_ros.data.rgbd_folder import RGBDFolder

        if not args.folder.is_dir():
            raise FileNotFoundError(f'no folder at {args.folder}')
        folder = RGBDFolder(args.folder)
        count = len(folder) if args.frames is None else min(args.frames, len(folder))
        frames = (folder[i] for i in range(count))
    written = write_rgbd_bag(
        args.out, frames, storage=args.storage, image_topic=args.image_topic,
        depth_topic=args.depth_topic, info_topic=args.info_topic, frame_id=args.frame_id,
        rate_hz=args.rate, depth_encoding=args.depth_encoding, compressed=args.compressed,
        tf_topic=args.tf_topic, world_frame=args.world_frame)
    image_topic = args.image_topic + ('/compressed' if args.compressed else '')
    poses = f', {args.tf_topic}' if args.synthetic_sequence else ''
    print(f'wrote {written} frames to {args.out} ({args.storage}): {image_topic}, '
          f'{args.depth_topic} [{args.depth_encoding}], {args.info_topic}{poses}')
    return 0


def _run_synthetic_robot(args: argparse.Namespace) -> int:
    """Synthetic scenes at ``--world-scale``, with a LiDAR and ``/tf_static`` if ``--lidar``."""
    from metric_solver_ros.bagio import write_rgbd_bag
    from metric_solver_ros.data.synthetic import scene_spec
    from metric_solver_ros.data.synthetic_lidar import (
        LidarScanner,
        render_sample,
        scale_scene,
        write_lidar_bag,
    )

    height, width = args.size
    count = 10 if args.frames is None else args.frames
    scenes = [scale_scene(scene_spec(args.synthetic, args.seed + i), args.world_scale)
              for i in range(count)]
    topics = dict(storage=args.storage, image_topic=args.image_topic,
                  depth_topic=args.depth_topic, info_topic=args.info_topic,
                  frame_id=args.frame_id, rate_hz=args.rate, depth_encoding=args.depth_encoding,
                  compressed=args.compressed)
    image_topic = args.image_topic + ('/compressed' if args.compressed else '')
    if not args.lidar:
        written = write_rgbd_bag(args.out, (render_sample(s, height, width) for s in scenes),
                                 **topics)
        print(f'wrote {written} frames to {args.out} ({args.storage}, world scale '
              f'{args.world_scale:g}): {image_topic}, {args.depth_topic} '
              f'[{args.depth_encoding}], {args.info_topic}')
        return 0
    scanner = LidarScanner(
        rings=args.lidar_rings, elevation_deg=tuple(args.lidar_elevation),
        azimuth_step_deg=args.lidar_azimuth_step, range_m=tuple(args.lidar_range),
        offset_m=tuple(args.lidar_offset), rpy_deg=tuple(args.lidar_rpy))
    written = write_lidar_bag(args.out, scenes, height, width, scanner,
                              lidar_topic=args.lidar_topic, lidar_frame=args.lidar_frame,
                              **topics)
    print(f'wrote {written} frames to {args.out} ({args.storage}, world scale '
          f'{args.world_scale:g}): {image_topic}, {args.depth_topic} [{args.depth_encoding}], '
          f'{args.info_topic}, {args.lidar_topic} ({scanner.rings} rings, frame '
          f'{args.lidar_frame}), /tf_static')
    return 0
