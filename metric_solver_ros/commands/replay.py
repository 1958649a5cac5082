r"""``metric-solver replay``: play a rosbag's camera into a running node and record its answers.

Examples::

    depth_node --ros-args -r __ns:=/depth -p device:=cuda &
    metric-solver replay --bag my_bag --image-topic /camera/color/image_raw \\
        --camera-info-topic /camera/color/camera_info --namespace /depth --record replay_bag
    metric-solver eval --bag replay_bag --depth-topic /camera/depth/image_raw \\
        --pred-topic /depth/depth --cap 10

The bag's image messages (``sensor_msgs/Image``, or ``CompressedImage`` published on
``<ns>/image/compressed``) and camera infos are published *as recorded*: the serialised bytes go
out unchanged, so header stamps are kept, with the recorded timing divided by ``--rate``.
Messages that share a log time go out camera info first. The node's ``depth``,
``anchor_mask``, ``depth_info`` (and with ``--points`` its ``points``) are received as serialised
bytes and, with ``--record``, written to a new bag together with copies of the original image,
camera info and ground-truth depth topics (original log times), so one bag holds input, GT and
prediction. Outputs are logged at their arrival time on the original bag's timeline
(``first log time + (arrival - start) x rate``).

Report (printed, and ``replay.json`` next to the recorded bag or at ``--summary``): frames
published, frames answered (a ``depth`` with the image's stamp arrived), and latency percentiles:
*end to end* (image published here -> its depth received here) and *node* (image published here
-> node published its ``depth_info``: ``DepthInfo.latency_ms`` minus the stamp's age when we
published it; only for stamps less than about 17 minutes old then, as the float32 field cannot
resolve 0.1 ms beyond that, so null for old bags). ``DepthInfo.latency_ms`` itself (image stamp
-> publish) is kept as ``depth_info_raw``.

Stillness hint (``--motion-hint auto``, the default): when the bag's /tf gives the camera's
pose (the image's ``frame_id``) and the running node has an ``odometry_topic``, each image is
preceded by a ``nav_msgs/Odometry`` on that topic, stamped with the image: the camera's pose and
the twist that moves it from the previous image's pose, so that the node's temporal filter knows
when the camera is still, as eval's ``--motion-hint auto`` tells its filter from the same /tf.
The summary's ``motion_hint`` says whether and why not.

The node keeps only the newest pending image, so a replay faster than the node answers drops
frames (reported, stamp by stamp). ``--lockstep`` publishes each image only once the previous one
is answered (or ``--wait-s`` passed), for a complete recording to evaluate.

With ground truth in the recording, the report ends with the ``metric-solver eval`` command that
scores it, its ``--cap`` told from the recorded GT (``metrics.suggested_cap_m``: 10 m when at
most 5 % of it is farther, else 80 m). An existing ``--record`` is refused unless ``--force``,
which deletes it only when it is a bag folder (nothing but ``metadata.yaml`` and storage files)
other than the bag being played, and only once the node is found, just before recording.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import queue
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from metric_solver_ros.bagio import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    STORAGES,
    RawBagWriter,
    cdr_header_stamp_ns,
    check_topics,
    is_bag_folder,
    raw_message_groups,
    recording_typestore,
)
from metric_solver_ros.commands.common import add_bag_arguments, check_bag_arguments
from metric_solver_ros.node_client import NODE_OUTPUTS, ReplayLink, percentiles, wait_for
from metric_solver_ros.temporal_filter import MODES as TEMPORAL_FILTER_MODES

#: Pause after every link is matched [s]: the node's reader may match our image writer later
#: than our writer matched it (DDS discovery is asymmetric) and drops best-effort samples
#: from a writer it does not know yet; 0 s lost the first 6 of 20 images in a probe.
SETTLE_S = 1.0
#: Coarsest float32 step of ``DepthInfo.latency_ms`` accepted for the node latency [ms].
NODE_LATENCY_RESOLUTION_MS = 0.1
#: Recorded GT depth images read to suggest eval's ``--cap`` (spread evenly over the recording).
CAP_SAMPLE_FRAMES = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the options of ``metric-solver replay``."""
    add_bag_arguments(parser, uses={
        '--bag': 'the bag to play',
        '--camera-info-topic': 'published alongside the images (needed for the node\'s points)',
        '--depth-topic': 'copied into the recording when the bag has it',
        '--max-frames': 'a frame is a published image'})
    parser.add_argument('--rate', type=float, default=1.0,
                        help='playback speed factor: 2 plays twice as fast (default: %(default)s)')
    parser.add_argument('--namespace', default='/depth',
                        help='namespace of the running node: it reads <ns>/image (or '
                             '<ns>/image/compressed) and <ns>/camera_info (default: %(default)s)')
    parser.add_argument('--record', type=pathlib.Path, default=None, metavar='OUT_BAG',
                        help='record the node\'s outputs (and copies of the bag\'s image, camera '
                             'info and GT depth) into this new bag')
    parser.add_argument('--storage', choices=STORAGES, default='mcap',
                        help='storage of the recorded bag (default: %(default)s)')
    parser.add_argument('--force', action='store_true',
                        help='overwrite an existing --record bag folder and the replay.json '
                             'beside it (a folder holding anything but a bag is never deleted)')
    parser.add_argument('--points', action='store_true',
                        help='also subscribe to and record <ns>/points (the node computes the '
                             'cloud only when someone subscribes)')
    parser.add_argument('--lockstep', action='store_true',
                        help='publish each image only after the previous one was answered '
                             '(or --wait-s passed): no frame is dropped by a slow node')
    parser.add_argument('--wait-s', type=float, default=5.0,
                        help='how long to wait for the node to appear, and for answers after '
                             'the last image / between outputs [s] (default: %(default)s)')
    parser.add_argument('--temporal-filter', choices=TEMPORAL_FILTER_MODES, default=None,
                        help='set the running node\'s temporal_filter parameter before playing '
                             '(off, scale, full); default: leave the node as it is')
    parser.add_argument('--motion-hint', choices=('auto', 'off'), default='auto',
                        help='auto: publish the camera motion from the bag\'s /tf as odometry on '
                             'the node\'s odometry_topic (when both exist), the temporal '
                             'filter\'s stillness hint; off: never (default: %(default)s)')
    parser.add_argument('--summary', type=pathlib.Path, default=None,
                        help='where to write the JSON summary (default: replay.json next to '
                             'the recorded bag; none without --record)')


def _check(args: argparse.Namespace) -> None:
    """Reject bad options before anything starts (ValueError / FileNotFoundError)."""
    if not (math.isfinite(args.rate) and args.rate > 0):
        raise ValueError(f'--rate must be a finite number > 0, got {args.rate}')
    if not (math.isfinite(args.wait_s) and args.wait_s > 0):
        raise ValueError(f'--wait-s must be > 0 s, got {args.wait_s}')
    check_bag_arguments(args)
    if not args.bag.exists():
        raise FileNotFoundError(f'no bag at {args.bag}')
    if args.record is not None and args.record.exists():
        _check_overwrite(args.record, args.bag, args.force)
    if args.summary is None and args.record is not None:
        args.summary = args.record.parent / 'replay.json'
        if args.summary.exists() and not (args.force and _is_replay_summary(args.summary)):
            why = ('is not a replay summary, so --force leaves it alone' if args.force else
                   '(from another replay?); pass --force to overwrite it,')
            raise ValueError(f'{args.summary} exists {why}; remove it, record into another '
                             'folder or pass --summary')
    if not args.namespace.startswith('/'):
        args.namespace = '/' + args.namespace
    args.namespace = args.namespace.rstrip('/')


def _check_overwrite(record: pathlib.Path, bag: pathlib.Path, force: bool) -> None:
    """Refuse an existing ``--record`` unless ``--force`` may delete it (ValueError saying why).

    It may when it is a bag folder (:func:`~metric_solver_ros.bagio.is_bag_folder`: an earlier
    recording) that neither is nor holds the bag being played.
    """
    if not force:
        raise ValueError(f'{record} exists; pass --force to overwrite it, remove it or choose '
                         'another --record')
    if bag.resolve() == record.resolve() or record.resolve() in bag.resolve().parents:
        raise ValueError(f'--record {record} holds the --bag being played; --force does not '
                         'delete it: choose another --record')
    if not is_bag_folder(record):
        raise ValueError(f'{record} is not a bag folder (it holds more than metadata.yaml and '
                         'storage files); --force deletes only those: remove it yourself or '
                         'choose another --record')


def _is_replay_summary(path: pathlib.Path) -> bool:
    """Whether ``path`` is a JSON summary that an earlier replay wrote."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {'frames_published', 'latency_ms'} <= set(data)


# ------------------------------------------------------------------------------- bookkeeping


@dataclass
class _Frame:
    """One published image: when it went out and what came back for it."""

    stamp_ns: int
    published_mono_ns: int
    published_wall_ns: int
    depth_mono_ns: int | None = None
    info_latency_ms: float | None = None
    inference_ms: float | None = None

    @property
    def end_to_end_ms(self) -> float | None:
        """Image published here -> its depth received here [ms]."""
        if self.depth_mono_ns is None:
            return None
        return (self.depth_mono_ns - self.published_mono_ns) / 1e6

    @property
    def node_latency_ms(self) -> float | None:
        """Image published here -> the node published its depth_info [ms] (stamp age removed).

        None when ``DepthInfo.latency_ms`` (float32) is too coarse at the stamp's age to resolve
        :data:`NODE_LATENCY_RESOLUTION_MS` (stamps older than about 10 minutes).
        """
        import numpy as np

        if self.info_latency_ms is None or not math.isfinite(self.info_latency_ms):
            return None
        if float(np.spacing(np.float32(self.info_latency_ms))) > NODE_LATENCY_RESOLUTION_MS:
            return None
        return self.info_latency_ms - (self.published_wall_ns - self.stamp_ns) / 1e6


@dataclass
class _Session:
    """Everything measured during one replay."""

    frames: dict[int, _Frame] = field(default_factory=dict)
    duplicate_stamps: int = 0
    received: dict[str, int] = field(default_factory=dict)
    unknown_stamp: dict[str, int] = field(default_factory=dict)
    last_arrival_mono_ns: int = 0

    def answered(self, stamp_ns: int) -> bool:
        frame = self.frames.get(stamp_ns)
        return frame is not None and frame.depth_mono_ns is not None

    def complete(self) -> bool:
        """Whether the newest image has its depth and depth_info.

        The node works on the newest pending image and publishes in order, so once the newest
        is answered, older images without an answer were dropped and will not come.
        """
        if not self.frames:
            return True
        last = next(reversed(self.frames.values()))
        return last.depth_mono_ns is not None and last.info_latency_ms is not None


class _Replay:
    """The replay loop: pacing, publishing, draining outputs into the session and the bag."""

    def __init__(self, args: argparse.Namespace, link: ReplayLink,
                 writer: RawBagWriter | None, odometry: _OdometryFeed | None = None) -> None:
        self.args, self.link, self.writer, self.odometry = args, link, writer, odometry
        self.session = _Session()
        self.start_mono_ns = 0
        self.bag_start_ns = 0

    def drain(self) -> None:
        """Move every output that arrived so far into the session (and the recording)."""
        from rclpy.serialization import deserialize_message

        from metric_solver_ros.msg import DepthInfo

        session = self.session
        while True:
            try:
                key, arrival_ns, data = self.link.arrivals.get_nowait()
            except queue.Empty:
                return
            session.last_arrival_mono_ns = arrival_ns
            session.received[key] = session.received.get(key, 0) + 1
            stamp = cdr_header_stamp_ns(data)
            frame = session.frames.get(stamp)
            if frame is None:
                session.unknown_stamp[key] = session.unknown_stamp.get(key, 0) + 1
            elif key == 'depth' and frame.depth_mono_ns is None:
                frame.depth_mono_ns = arrival_ns
            elif key == 'depth_info' and frame.info_latency_ms is None:
                info = deserialize_message(data, DepthInfo)
                frame.info_latency_ms = float(info.latency_ms)
                frame.inference_ms = float(info.inference_ms)
            if self.writer is not None:
                log_ns = self.bag_start_ns + round(
                    (arrival_ns - self.start_mono_ns) * self.args.rate)
                self.writer.write(self.link.output_topics[key], NODE_OUTPUTS[key][1], data,
                                  log_ns)

    def wait_until(self, done, deadline_mono_ns: int) -> bool:
        """Drain outputs until ``done()`` or the deadline [monotonic ns]; return ``done()``."""
        while True:
            self.drain()
            if done():
                return True
            remaining_ns = deadline_mono_ns - time.monotonic_ns()
            if remaining_ns <= 0:
                return False
            time.sleep(min(remaining_ns / 1e9, 0.002))

    def play(self, topics: list[str], publish: set[str]) -> bool:
        """Publish (and copy) the bag's messages in time; return False when interrupted."""
        args, session = self.args, self.session
        wait_ns = round(args.wait_s * 1e9)
        previous_stamp = None
        images = 0
        try:
            for group in raw_message_groups(args.bag, topics):
                log_ns = group[0][1]
                if not self.start_mono_ns:
                    self.start_mono_ns, self.bag_start_ns = time.monotonic_ns(), log_ns
                has_image = any(c.topic == args.image_topic for c, _, _ in group)
                if has_image and args.max_frames is not None and images >= args.max_frames:
                    break
                target_ns = self.start_mono_ns + round((log_ns - self.bag_start_ns) / args.rate)
                if has_image and args.lockstep and previous_stamp is not None:
                    self.wait_until(lambda s=previous_stamp: session.answered(s),
                                    time.monotonic_ns() + wait_ns)
                self.wait_until(lambda: False, target_ns)
                # Camera info before the image of the same instant (the node pairs by stamp).
                for connection, _, data in sorted(
                        group, key=lambda m: m[0].topic == args.image_topic):
                    if connection.topic == args.image_topic:
                        previous_stamp = cdr_header_stamp_ns(data)
                        if self.odometry is not None:
                            self.odometry.publish(previous_stamp)
                        self._publish_image(data, previous_stamp)
                        images += 1
                    elif connection.topic in publish:
                        self.link.pub_info.publish(data)
                    if self.writer is not None:
                        self.writer.write(connection.topic, connection.msgtype, data, log_ns,
                                          source=connection)
            # Answers in flight: wait for the newest image's, or until nothing came for --wait-s.
            last_ns = time.monotonic_ns()
            while True:
                deadline_ns = max(last_ns, session.last_arrival_mono_ns) + wait_ns
                if (self.wait_until(session.complete, deadline_ns)
                        or max(last_ns, session.last_arrival_mono_ns) + wait_ns
                        <= time.monotonic_ns()):
                    break
        except KeyboardInterrupt:
            self.drain()
            return False
        return True

    def _publish_image(self, data: bytes, stamp_ns: int) -> None:
        """Publish one serialised image and note when it went out."""
        if stamp_ns in self.session.frames:
            self.session.duplicate_stamps += 1
        self.session.frames.setdefault(
            stamp_ns, _Frame(stamp_ns, time.monotonic_ns(), time.time_ns()))
        self.link.pub_image.publish(data)


class _OdometryFeed:
    """The camera's motion from the bag's /tf, published as odometry (``--motion-hint``).

    Args:
        publisher: A ``nav_msgs/Odometry`` publisher on the node's ``odometry_topic``.
        poses: The bag's transforms.
        frame_id: The images' frame (the camera whose motion counts).
    """

    def __init__(self, publisher: Any, poses: Any, frame_id: str) -> None:
        self.publisher, self.poses, self.frame_id = publisher, poses, frame_id
        self.published = 0
        self._previous: tuple[int, Any] | None = None  # the last image's (stamp [ns], pose)

    def publish(self, stamp_ns: int) -> None:
        """Publish the camera's pose and its twist since the previous image, at ``stamp_ns``.

        Nothing when the pose is unknown then, or for the first image (no twist yet): the node
        then counts the motion as unknown.
        """
        from nav_msgs.msg import Odometry
        from transforms3d.quaternions import mat2quat

        from metric_solver_ros.temporal_filter import CameraMotion

        found = self.poses.lookup(self.frame_id, stamp_ns)
        previous, self._previous = self._previous, None if found is None else (stamp_ns,
                                                                               found[1])
        if found is None or previous is None or stamp_ns <= previous[0]:
            return
        interval_s = (stamp_ns - previous[0]) / 1e9
        motion = CameraMotion.between(previous[1], found[1])
        msg = Odometry(child_frame_id=self.frame_id)
        msg.header.frame_id = found[0]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        position, orientation = msg.pose.pose.position, msg.pose.pose.orientation
        position.x, position.y, position.z = (float(v) for v in found[1][:3, 3])
        orientation.w, orientation.x, orientation.y, orientation.z = (
            float(v) for v in mat2quat(found[1][:3, :3]))
        twist = msg.twist.twist
        twist.linear.x, twist.linear.y, twist.linear.z = (
            v / interval_s for v in motion.translation_m)
        twist.angular.x, twist.angular.y, twist.angular.z = (
            v / interval_s for v in motion.rotation_rad)
        self.publisher.publish(msg)
        self.published += 1


def _odometry_feed(args: argparse.Namespace, link: ReplayLink) -> tuple[Any, str, bool]:
    """The odometry feed of ``--motion-hint auto`` (or None) and what was done, in words.

    The third value says whether the bag had the camera's motion and it could not reach the
    node: worth a note in the summary (a bag without poses is the common case, no news).
    """
    from metric_solver_ros.bagio import first_message, header_stamp_ns
    from metric_solver_ros.bagtf import PoseLookup

    if args.motion_hint == 'off':
        return None, 'off (--motion-hint off)', False
    poses = PoseLookup.from_bag(args.bag)
    image = first_message(args.bag, args.image_topic)
    frame_id = '' if image is None else image.header.frame_id
    if poses is None or poses.lookup(frame_id, header_stamp_ns(image)) is None:
        return None, f'none: the bag\'s /tf has no pose of the camera frame {frame_id!r}', False
    topic = link.get_node_parameter('odometry_topic', args.wait_s)
    if not topic:
        return None, ('none: the node has no odometry_topic (start it with '
                      '-p odometry_topic:=odom to hand it the bag\'s camera motion)'), True
    if not topic.startswith('/'):  # the node's relative and private names
        topic = (f'{link.ns}/metric_solver/{topic[2:]}' if topic.startswith('~/')
                 else f'{link.ns}/{topic}')
    try:
        from nav_msgs.msg import Odometry
    except ImportError as exc:
        return None, f'none: nav_msgs is missing ({exc})', True
    feed = _OdometryFeed(link.node.create_publisher(Odometry, topic, 10), poses, frame_id)
    wait_for(lambda: feed.publisher.get_subscription_count() > 0, args.wait_s)
    return feed, f'the bag\'s /tf as odometry on {topic}', False


# ------------------------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    """Replay, record and report; return 0 when frames were answered, 130 if interrupted, else 1.

    Raises:
        ValueError: For bad options or topics (the message lists the bag's topics).
        FileNotFoundError: If the bag is missing.
    """
    _check(args)
    bag_topics = check_topics(args.bag, {
        '--image-topic': (args.image_topic, (IMAGE, COMPRESSED_IMAGE)),
        '--camera-info-topic': (args.camera_info_topic, (CAMERA_INFO,))})
    image_type = bag_topics[args.image_topic]
    publish = {args.image_topic}
    if args.camera_info_topic is not None:
        publish.add(args.camera_info_topic)
    copied = sorted(publish | ({args.depth_topic} if args.depth_topic in bag_topics else set()))
    outputs = ['depth', 'anchor_mask', 'depth_info'] + (['points'] if args.points else [])
    typestore = recording_typestore() if args.record else None

    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')  # big best-effort images
    import rclpy

    owns_rclpy = not rclpy.ok()
    if owns_rclpy:
        # Ctrl-C must stop the playback (and still report), not silently shut the context down.
        from rclpy.signals import SignalHandlerOptions

        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    link = writer = None
    try:
        link = ReplayLink(args.namespace, image_type == COMPRESSED_IMAGE, outputs)
        with_info = args.camera_info_topic is not None
        if not wait_for(lambda: not link.missing_links(with_info), args.wait_s):
            missing = link.missing_links(with_info)
            hint = (' (is the node running with -p image_transport:=compressed?)'
                    if image_type == COMPRESSED_IMAGE else '')
            print(f'metric-solver replay: no running node on {args.namespace} within '
                  f'{args.wait_s:g} s: nothing on {", ".join(missing)}{hint}. Start it with '
                  f'`depth_node --ros-args -r __ns:={args.namespace}` (same ROS_DOMAIN_ID and '
                  'FASTDDS_BUILTIN_TRANSPORTS).', file=sys.stderr)
            return 1
        time.sleep(SETTLE_S)
        if args.temporal_filter is not None:
            refused = link.set_node_parameters(temporal_filter=args.temporal_filter)
            if refused:
                print(f'metric-solver replay: could not set temporal_filter '
                      f'{args.temporal_filter} on the node: {refused}', file=sys.stderr)
                return 1
        odometry, hint, hint_missed = _odometry_feed(args, link)
        if args.record is not None:
            if args.force and args.record.exists():
                shutil.rmtree(args.record)  # _check: a bag folder, not the bag being played
            writer = RawBagWriter(args.record, args.storage, typestore)
        replay = _Replay(args, link, writer, odometry)
        started = time.monotonic()
        completed = replay.play(copied if writer is not None else sorted(publish), publish)
        duration_s = time.monotonic() - started
    finally:
        if link is not None:
            link.close()
        if writer is not None:
            writer.close()
        if owns_rclpy and rclpy.ok():
            rclpy.shutdown()

    has_gt = args.depth_topic in bag_topics
    cap = (_suggest_cap(args.record, args.depth_topic, writer.counts.get(args.depth_topic, 0))
           if writer is not None and bag_topics.get(args.depth_topic) == IMAGE else None)
    summary = _summary(args, replay.session, image_type, duration_s, completed, writer, has_gt,
                       cap)
    summary['motion_hint'] = {'mode': args.motion_hint, 'source': hint,
                              'odometry_published': 0 if odometry is None else odometry.published}
    if hint_missed:
        summary['notes'].append(f'motion hint: {hint}')
    _print_report(summary)
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2, allow_nan=False) + '\n')
        print(f'summary: {args.summary}')
    if not completed:
        return 130
    return 0 if summary['frames_answered'] else 1


def _suggest_cap(path: pathlib.Path, topic: str, count: int) -> tuple[float, float] | None:
    """Eval's ``--cap`` for a recording: :func:`~metric_solver_ros.metrics.suggested_cap_m`.

    Reads up to :data:`CAP_SAMPLE_FRAMES` GT depth images of ``topic`` spread evenly over the
    recording, every 2nd pixel in x and y: plenty to tell indoors from outdoors.

    Args:
        path: The recording.
        topic: Its GT depth topic (``sensor_msgs/Image``).
        count: Number of messages on ``topic``.

    Returns:
        ``(cap [m], share of the GT beyond the indoor cap)``, or None without valid GT.
    """
    import numpy as np

    from metric_solver_ros.bagio import get_typestore
    from metric_solver_ros.conversions import MessageError, depth_image_to_m
    from metric_solver_ros.metrics import suggested_cap_m

    stride = max(1, math.ceil(count / CAP_SAMPLE_FRAMES))
    store = get_typestore()
    sampled = []
    messages = (message for group in raw_message_groups(path, {topic}) for message in group)
    for index, (connection, _, data) in enumerate(messages):
        if index % stride:
            continue
        try:
            depth_m = depth_image_to_m(store.deserialize_cdr(data, connection.msgtype))
        except MessageError:
            continue  # eval says what is wrong with such a message; here it just does not count
        sampled.append(depth_m[::2, ::2].ravel())
    return suggested_cap_m(np.concatenate(sampled)) if sampled else None


def _eval_suggestion(args: argparse.Namespace, pred_topic: str,
                     cap: tuple[float, float] | None) -> tuple[str, dict[str, Any]]:
    """The ``metric-solver eval`` command for the recording, and why its ``--cap``."""
    from metric_solver_ros.metrics import DEFAULT_CAP_M, INDOOR_CAP_M

    words = ['metric-solver', 'eval', '--bag', str(args.record), '--image-topic',
             args.image_topic, '--depth-topic', args.depth_topic, '--pred-topic', pred_topic]
    if cap is None:
        return shlex.join(words), {
            'cap_m': None, 'gt_share_beyond_indoor_cap': None,
            'reason': f'no valid GT depth in the recording: eval\'s default --cap '
                      f'{DEFAULT_CAP_M:g} m (outdoors) applies; pass --cap {INDOOR_CAP_M:g} for '
                      'an indoor scene'}
    cap_m, share = cap
    scene = (f'an indoor scene; outdoors {DEFAULT_CAP_M:g}' if cap_m == INDOOR_CAP_M
             else f'an outdoor scene; indoors {INDOOR_CAP_M:g}')
    return shlex.join([*words, '--cap', f'{cap_m:g}']), {
        'cap_m': cap_m, 'gt_share_beyond_indoor_cap': share,
        'reason': f'--cap {cap_m:g}: {100.0 * share:.1f}% of the recorded GT is beyond '
                  f'{INDOOR_CAP_M:g} m ({scene})'}


def _summary(args: argparse.Namespace, session: _Session, image_type: str, duration_s: float,
             completed: bool, writer: RawBagWriter | None, has_gt: bool,
             cap: tuple[float, float] | None = None) -> dict[str, Any]:
    """The JSON summary (strict JSON: unknown values are null).

    ``cap`` is :func:`_suggest_cap` of the recording (None: unknown, eval's default applies).
    """
    frames = sorted(session.frames.values(), key=lambda f: f.stamp_ns)
    answered = [f for f in frames if f.depth_mono_ns is not None]
    pred_topic = f'{args.namespace}/depth'
    notes = []
    with_info = [f for f in frames if f.info_latency_ms is not None]
    if with_info and not any(f.node_latency_ms is not None for f in with_info):
        notes.append('node latency unavailable: the bag\'s stamps are too old for the float32 '
                     'DepthInfo.latency_ms to resolve it; use end_to_end')
    eval_command = eval_cap = None
    if writer is not None and has_gt:
        eval_command, eval_cap = _eval_suggestion(args, pred_topic, cap)
    return {
        'bag': str(args.bag), 'image_topic': args.image_topic, 'image_type': image_type,
        'camera_info_topic': args.camera_info_topic, 'namespace': args.namespace,
        'rate': args.rate, 'lockstep': args.lockstep, 'wait_s': args.wait_s,
        'temporal_filter': args.temporal_filter,
        'completed': completed, 'duration_s': duration_s,
        'frames_published': len(frames), 'frames_answered': len(answered),
        'answered_fraction': len(answered) / len(frames) if frames else None,
        'unanswered_stamps_ns': [f.stamp_ns for f in frames if f.depth_mono_ns is None],
        'duplicate_image_stamps': session.duplicate_stamps,
        'outputs_received': dict(session.received),
        'outputs_with_unknown_stamp': dict(session.unknown_stamp),
        'latency_ms': {
            'end_to_end': percentiles([f.end_to_end_ms for f in answered]),
            'node': percentiles([f.node_latency_ms for f in frames
                                 if f.node_latency_ms is not None]),
            'depth_info_raw': percentiles([f.info_latency_ms for f in frames
                                           if f.info_latency_ms is not None
                                           and math.isfinite(f.info_latency_ms)]),
        },
        'notes': notes,
        'inference_ms': percentiles([f.inference_ms for f in frames
                                     if f.inference_ms is not None]),
        'record': None if writer is None else {
            'bag': str(args.record), 'storage': args.storage, 'messages': dict(writer.counts),
            'pred_topic': pred_topic, 'gt_depth_topic': args.depth_topic if has_gt else None},
        'eval_command': eval_command,
        'eval_cap': eval_cap,
        'frames': [{'stamp_ns': f.stamp_ns, 'answered': f.depth_mono_ns is not None,
                    'end_to_end_ms': f.end_to_end_ms, 'node_latency_ms': f.node_latency_ms,
                    'inference_ms': f.inference_ms} for f in frames],
    }


def _print_report(summary: dict[str, Any]) -> None:
    def cells(stats: dict[str, Any]) -> str:
        if not stats['n']:
            return 'none'
        return '  '.join(f'{k} {stats[k]:.1f}' for k in ('p50', 'p95', 'p99', 'max'))

    published, answered = summary['frames_published'], summary['frames_answered']
    share = f' ({100.0 * answered / published:.0f}%)' if published else ''
    latency = summary['latency_ms']
    lines = [
        f'replay: {published} frames published from {summary["bag"]} '
        f'({summary["image_topic"]}) at {summary["rate"]:g}x in {summary["duration_s"]:.1f} s'
        + ('' if summary['completed'] else ' (interrupted)'),
        f'answered: {answered} / {published}{share}'
        + (f'; unanswered stamps [ns]: {summary["unanswered_stamps_ns"][:10]}'
           + (' ...' if len(summary['unanswered_stamps_ns']) > 10 else '')
           if published > answered else ''),
        f'end-to-end latency [ms] (published -> depth received): {cells(latency["end_to_end"])}',
        f'node latency [ms] (published -> depth_info sent):    {cells(latency["node"])}',
        f'inference [ms] (depth_info):                          '
        f'{cells(summary["inference_ms"])}',
    ]
    lines += [f'note: {note}' for note in summary['notes']]
    if summary['record'] is not None:
        counts = ', '.join(f'{t} {n}' for t, n in sorted(summary['record']['messages'].items()))
        lines.append(f'recorded {summary["record"]["bag"]}: {counts}')
    if summary['eval_command']:
        lines.append(f'evaluate: {summary["eval_command"]}')
        lines.append(f'  ({summary["eval_cap"]["reason"]})')
    print('\n'.join(lines))
