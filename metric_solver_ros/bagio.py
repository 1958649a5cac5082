"""Deterministic rosbag2 reading and writing with the `rosbags` library (no ROS install needed).

Both storage plugins are supported for reading and writing: ``mcap`` and ``sqlite3``
(rosbags 0.11 writes both; bags are written in rosbag2 metadata version 8). Readers take a bag
directory or a bare ``.mcap`` / ``.db3`` file. Messages are built and parsed with the ROS 2 Humble
type store; ``sensor_msgs/Image``, ``CompressedImage`` and ``CameraInfo`` are identical in every
ROS 2 distribution since Humble.

Time: every message has a *log time* (when the recorder received it; the bag's index) and a
*header stamp* (when the sensor captured it). Offline evaluation pairs messages by **header
stamp**, which does not depend on transport delays; a header stamp of exactly 0 (drivers that
leave it unset) falls back to the log time. Messages are read in the order the storage returns
them, which is log-time order (sqlite3 ``ORDER BY timestamp``, indexed MCAP merged by time).

Image decoding is the job of :mod:`metric_solver_ros.conversions`; this module only moves
messages in and out of bags and pairs them. ``metric-solver replay`` copies serialised messages
unchanged (:func:`raw_message_groups`, :class:`RawBagWriter`, :func:`recording_typestore`).
"""

from __future__ import annotations

import bisect
import functools
import heapq
import pathlib
import struct
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from metric_solver_ros.conversions import MAX_16UC1_MM, depth_to_16uc1, rounded_mm

#: Storage plugins accepted by :class:`BagWriter`.
STORAGES = ('mcap', 'sqlite3')
#: Depth encodings :func:`depth_to_image_msg` writes.
DEPTH_WRITE_ENCODINGS = ('32FC1', '16UC1')
#: rosbag2 metadata version written (rosbags writes 8 or 9; 8 is the older, for compatibility).
BAG_VERSION = 8

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
POINT_CLOUD2 = 'sensor_msgs/msg/PointCloud2'
#: The node's own message type (``msg/DepthInfo.msg``); :func:`recording_typestore` knows it.
DEPTH_INFO = 'metric_solver_ros/msg/DepthInfo'

X = TypeVar('X')
Y = TypeVar('Y')


@functools.lru_cache(maxsize=1)
def get_typestore() -> Any:
    """Return the (cached) rosbags type store used for every message: ROS 2 Humble."""
    import rosbags.typesys

    return rosbags.typesys.get_typestore(rosbags.typesys.Stores.ROS2_HUMBLE)


def _header(stamp_ns: int, frame_id: str) -> Any:
    """Build a ``std_msgs/Header`` for ``stamp_ns`` [ns since the epoch]."""
    types = get_typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types['std_msgs/msg/Header'](
        stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=frame_id)


def header_stamp_ns(msg: Any) -> int:
    """Return ``msg.header.stamp`` in nanoseconds (works for rclpy and rosbags messages)."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """Read the header stamp of a serialised message that starts with ``std_msgs/Header``.

    Avoids deserialising large images when only the stamp is needed.

    Args:
        raw: CDR bytes (4-byte encapsulation header, then ``int32 sec``, ``uint32 nanosec``).

    Returns:
        Stamp [ns].

    Raises:
        ValueError: If the data is too short or not CDR.
    """
    raw = memoryview(raw)
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError('message data is not CDR with a leading std_msgs/Header')
    sec, nanosec = struct.unpack('<iI' if raw[1] == 1 else '>iI', raw[4:12])
    return sec * 1_000_000_000 + nanosec


def rgb_to_image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
    """Build an ``rgb8`` ``sensor_msgs/Image`` (rosbags type) from an RGB array.

    Args:
        rgb: uint8 array [H, W, 3], RGB order.
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.

    Returns:
        The message.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {rgb.shape}')
    height, width = rgb.shape[:2]
    return get_typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding='rgb8',
        is_bigendian=0, step=width * 3, data=rgb.reshape(-1))


def rgb_to_compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str,
                          fmt: str = 'jpeg', jpeg_quality: int = 95) -> Any:
    """Build a ``sensor_msgs/CompressedImage`` (rosbags type) from an RGB array.

    Args:
        rgb: uint8 array [H, W, 3], RGB order.
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.
        fmt: ``'jpeg'`` (lossy, what cameras publish) or ``'png'`` (lossless).
        jpeg_quality: JPEG quality, 0..100.

    Returns:
        The message; ``format`` follows image_transport (``'rgb8; jpeg compressed bgr8'``).
    """
    import cv2

    if fmt not in ('jpeg', 'png'):
        raise ValueError(f'compressed format must be jpeg or png, got {fmt!r}')
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == 'jpeg' else []
    ok, encoded = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png', bgr, params)
    if not ok:
        raise ValueError(f'OpenCV could not encode the image as {fmt}')
    return get_typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp_ns, frame_id), format=f'rgb8; {fmt} compressed bgr8',
        data=encoded.reshape(-1))


def depth_to_image_msg(depth_m: np.ndarray, stamp_ns: int, frame_id: str,
                       encoding: str = '32FC1') -> Any:
    """Build a depth ``sensor_msgs/Image`` (rosbags type).

    Args:
        depth_m: float array [H, W] of depth [m]; 0 / NaN invalid, +inf too far.
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.
        encoding: ``'32FC1'``: metres, values kept as they are (REP 117: NaN invalid, +inf far);
            ``'16UC1'``: millimetres rounded to the nearest integer, with 0 for everything
            16 bits cannot hold (0 / NaN, +inf, below 0.5 mm, above 65.535 m).

    Returns:
        The message (little endian).
    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if depth_m.ndim != 2:
        raise ValueError(f'expected an HxW depth image, got shape {depth_m.shape}')
    height, width = depth_m.shape
    if encoding == '32FC1':
        values = depth_m.astype('<f4')
    elif encoding == '16UC1':
        values = depth_to_16uc1(depth_m).astype('<u2')
    else:
        raise ValueError(f'depth encoding must be one of {DEPTH_WRITE_ENCODINGS}, got {encoding!r}')
    return get_typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
        is_bigendian=0, step=width * values.itemsize,
        data=np.ascontiguousarray(values).view(np.uint8).reshape(-1))


def camera_info_msg(intrinsics: Sequence[float], width: int, height: int, stamp_ns: int,
                    frame_id: str) -> Any:
    """Build a distortion-free pinhole ``sensor_msgs/CameraInfo`` (rosbags type).

    Args:
        intrinsics: ``(fx, fy, cx, cy)`` [px].
        width: Image width [px].
        height: Image height [px].
        stamp_ns: Header stamp [ns].
        frame_id: Header frame id.

    Returns:
        The message (``plumb_bob`` with zero distortion, identity R, P = [K | 0]).
    """
    types = get_typestore().types
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return types[CAMERA_INFO](
        header=_header(stamp_ns, frame_id), height=int(height), width=int(width),
        distortion_model='plumb_bob', d=np.zeros(5),
        k=np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]),
        r=np.eye(3).reshape(-1),
        p=np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _writer(path: pathlib.Path, storage: str) -> Any:
    """An unopened rosbags Writer of ``storage`` (``'mcap'`` or ``'sqlite3'``) at ``path``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {STORAGES}, got {storage!r}')
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    return Writer(path, version=BAG_VERSION, storage_plugin=plugin)


class BagWriter:
    """Write rosbags messages to a new rosbag2 directory; connections are added on first use.

    Use as a context manager::

        with BagWriter('out_bag', storage='mcap') as bag:
            bag.write('/camera/color/image_raw', msg, log_time_ns)

    Args:
        path: Bag directory to create; it must not exist.
        storage: ``'mcap'`` or ``'sqlite3'``.
    """

    def __init__(self, path: str | pathlib.Path, storage: str = 'mcap') -> None:
        self.path = pathlib.Path(path)
        if self.path.exists():
            raise ValueError(f'{self.path} exists; remove it or choose another bag path')
        self._writer = _writer(self.path, storage)
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, log_time_ns: int) -> None:
        """Serialise ``msg`` (a rosbags message) and append it to ``topic``.

        Args:
            topic: Topic name.
            msg: rosbags message; its type is ``msg.__msgtype__``.
            log_time_ns: Log (receive) time [ns].

        Raises:
            ValueError: If the topic already carries another message type.
        """
        store = get_typestore()
        msgtype = msg.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=store)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise ValueError(f'topic {topic} carries {connection.msgtype}, not {msgtype}')
        self._writer.write(connection, int(log_time_ns), store.serialize_cdr(msg, msgtype))


def depth_info_definition() -> str:
    """Return the text of ``msg/DepthInfo.msg`` (installed share directory or source checkout).

    Raises:
        FileNotFoundError: If no copy is found.
    """
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(pathlib.Path(get_package_share_directory('metric_solver_ros')))
    except (ImportError, KeyError, LookupError, OSError, ValueError):
        pass  # no ament index (plain venv): look in the prefix and the checkout
    candidates += [pathlib.Path(sys.prefix) / 'share' / 'metric_solver_ros',
                   pathlib.Path(__file__).resolve().parents[1]]
    for root in candidates:
        path = root / 'msg' / 'DepthInfo.msg'
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError('msg/DepthInfo.msg not found in ' +
                            ', '.join(str(c) for c in candidates))


def recording_typestore() -> Any:
    """A rosbags type store (ROS 2 Humble) that also knows :data:`DEPTH_INFO`."""
    from rosbags.typesys import Stores, get_types_from_msg
    from rosbags.typesys import get_typestore as new_typestore

    store = new_typestore(Stores.ROS2_HUMBLE)  # a fresh store: the shared one stays as is
    store.register(get_types_from_msg(depth_info_definition(), DEPTH_INFO))
    return store


class RawBagWriter:
    """Write already serialised (CDR) messages to a new rosbag2; connections added on first use.

    Args:
        path: Bag directory to create (must not exist).
        storage: ``'mcap'`` or ``'sqlite3'``.
        typestore: rosbags type store that defines every message type written
            (:func:`recording_typestore` for the node's outputs).
    """

    def __init__(self, path: pathlib.Path, storage: str, typestore: Any) -> None:
        self.path = path
        self._store = typestore
        self._writer = _writer(path, storage)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def write(self, topic: str, msgtype: str, data: bytes | memoryview, log_time_ns: int,
              source: Any = None) -> None:
        """Append one serialised message.

        Args:
            topic: Topic name.
            msgtype: Message type, e.g. ``sensor_msgs/msg/Image``.
            data: CDR bytes.
            log_time_ns: Log time [ns].
            source: The rosbags connection it was read from: its message definition is reused.
        """
        connection = self._connections.get(topic)
        if connection is None:
            definition = getattr(source, 'msgdef', None)
            if definition is not None and definition.data and source.digest:
                connection = self._writer.add_connection(
                    topic, msgtype, msgdef=definition.data, rihs01=source.digest)
            else:
                connection = self._writer.add_connection(topic, msgtype, typestore=self._store)
            self._connections[topic] = connection
        self._writer.write(connection, int(log_time_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        """Finish the bag (writes its metadata)."""
        self._writer.close()


@dataclass
class _LostDepth:
    """Count of finite GT pixels beyond :data:`MAX_16UC1_MM` among the valid (finite, > 0) ones."""

    beyond: int = 0
    valid: int = 0
    frames_beyond: int = 0
    frames: int = 0

    def add(self, depth_m: np.ndarray) -> None:
        """Count one frame's depth [m]."""
        mm = rounded_mm(depth_m)
        with np.errstate(invalid='ignore'):
            beyond = int(np.count_nonzero(np.isfinite(mm) & (mm > MAX_16UC1_MM)))
            self.valid += int(np.count_nonzero(np.isfinite(mm) & (mm > 0)))
        self.beyond += beyond
        self.frames_beyond += beyond > 0
        self.frames += 1

    def describe(self) -> str:
        """E.g. ``3281 GT pixels (26.8% of the finite GT) in 1 of 3 frames``."""
        share = 100.0 * self.beyond / self.valid
        return (f'{self.beyond} GT pixels ({share:.3g}% of the finite GT) in {self.frames_beyond} '
                f'of {self.frames} frames')


def write_rgbd_bag(path: str | pathlib.Path, frames: Iterable[Any], storage: str = 'mcap',
                   image_topic: str = '/camera/color/image_raw',
                   depth_topic: str = '/camera/depth/image_raw',
                   info_topic: str = '/camera/color/camera_info',
                   frame_id: str = 'camera_color_optical_frame', rate_hz: float = 10.0,
                   depth_encoding: str = '32FC1', compressed: bool = False,
                   start_ns: int = 1_700_000_000_000_000_000, tf_topic: str = '/tf',
                   world_frame: str = 'map') -> int:
    """Write RGB-D frames as image, camera_info and ground-truth depth topics (and /tf).

    Frame ``i`` gets header stamp and log time ``start_ns + i / rate_hz`` on all topics
    (depth registered to the colour camera, hence one frame id). CameraInfo is written for frames
    whose intrinsics are known. With ``compressed`` the image is a JPEG ``CompressedImage`` on
    ``image_topic + '/compressed'`` (the image_transport name). A frame with a pose
    (``pose_world_cam``, 4x4 camera-to-world) adds a ``tf2_msgs/TFMessage`` on ``tf_topic``:
    ``world_frame`` -> ``frame_id`` at the frame's stamp.

    ``16UC1`` cannot hold finite GT beyond 65.535 m (:data:`MAX_16UC1_MM`), which it writes as 0
    (invalid). The bag is still written, since the nearer GT stays useful, and a warning on
    stderr gives the count and fraction of such pixels and points to ``32FC1``.

    Args:
        path: Bag directory to create (must not exist).
        frames: Sample-like objects with ``image`` (uint8 HxWx3 RGB), ``depth_m`` (float HxW [m],
            0 / NaN invalid, +inf sky) and ``intrinsics`` (``(fx, fy, cx, cy)`` [px] or None).
        storage: ``'mcap'`` or ``'sqlite3'``.
        image_topic: Colour image topic.
        depth_topic: Depth topic.
        info_topic: CameraInfo topic.
        frame_id: Header frame id of every message.
        rate_hz: Frame rate [Hz].
        depth_encoding: ``'32FC1'`` (metres) or ``'16UC1'`` (millimetres, see
            :func:`depth_to_image_msg`).
        compressed: Write the image as JPEG ``CompressedImage``.
        start_ns: Stamp of the first frame [ns since the epoch].
        tf_topic: Topic of the camera poses.
        world_frame: Parent frame of the camera poses.

    Returns:
        Number of frames written.
    """
    from metric_solver_ros.bagtf import tf_message

    if not rate_hz > 0:
        raise ValueError(f'rate must be > 0 Hz, got {rate_hz}')
    if depth_encoding not in DEPTH_WRITE_ENCODINGS:
        raise ValueError(
            f'depth encoding must be one of {DEPTH_WRITE_ENCODINGS}, got {depth_encoding!r}')
    period_ns = round(1e9 / rate_hz)
    count = 0
    lost = _LostDepth()
    with BagWriter(path, storage) as bag:
        for i, frame in enumerate(frames):
            stamp_ns = start_ns + i * period_ns
            image = np.asarray(frame.image)
            if compressed:
                bag.write(image_topic + '/compressed',
                          rgb_to_compressed_msg(image, stamp_ns, frame_id), stamp_ns)
            else:
                bag.write(image_topic, rgb_to_image_msg(image, stamp_ns, frame_id), stamp_ns)
            if getattr(frame, 'intrinsics', None) is not None:
                bag.write(info_topic, camera_info_msg(
                    frame.intrinsics, image.shape[1], image.shape[0], stamp_ns, frame_id),
                    stamp_ns)
            bag.write(depth_topic, depth_to_image_msg(frame.depth_m, stamp_ns, frame_id,
                                                      depth_encoding), stamp_ns)
            if depth_encoding == '16UC1':
                lost.add(frame.depth_m)
            pose = getattr(frame, 'pose_world_cam', None)
            if pose is not None:
                bag.write(tf_topic, tf_message(pose, stamp_ns, world_frame, frame_id), stamp_ns)
            count += 1
    if lost.beyond:
        print(f'warning: {path}: {lost.describe()} beyond {MAX_16UC1_MM / 1000:g} m, which '
              '16UC1 cannot hold, were written as 0 (invalid); write 32FC1 to keep them '
              '(make-bag --depth-encoding 32FC1)', file=sys.stderr)
    return count



#: What rosbag2 writes into a bag folder besides ``metadata.yaml``: storage files (compressed
#: or not) and sqlite3's journals.
BAG_FILE_SUFFIXES = ('.mcap', '.db3', '.zstd', '.db3-shm', '.db3-wal')


def is_bag_folder(path: str | pathlib.Path) -> bool:
    """Whether ``path`` is a folder holding nothing but what rosbag2 writes into one.

    That is ``metadata.yaml`` and files ending in :data:`BAG_FILE_SUFFIXES` (an empty folder
    too: nothing in it). What a command may delete to overwrite a bag it wrote: a subfolder, a
    link or any other file means the folder holds more than a bag.
    """
    path = pathlib.Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    return all(entry.is_file() and not entry.is_symlink()
               and (entry.name == 'metadata.yaml' or entry.name.endswith(BAG_FILE_SUFFIXES))
               for entry in path.iterdir())


def _open_reader(path: str | pathlib.Path) -> Any:
    """Return an unopened rosbags Reader, with a clear error for a missing path."""
    from rosbags.rosbag2 import Reader

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f'no bag at {path}')
    return Reader(path)


def list_topics(path: str | pathlib.Path) -> dict[str, str]:
    """Return ``{topic: message type}`` of a bag (directory, ``.mcap`` or ``.db3`` file)."""
    with _open_reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def check_topics(path: str | pathlib.Path,
                 wanted: Mapping[str, tuple[str | None, Collection[str]]]) -> dict[str, str]:
    """Check the topics that command-line options name before reading a bag.

    Args:
        path: The bag.
        wanted: Option (``'--image-topic'``) -> (its topic or None when not given, the message
            types it may have).

    Returns:
        ``{topic: message type}`` of the bag (:func:`list_topics`).

    Raises:
        ValueError: A topic is absent or of another type; the message lists the bag's topics.
    """
    topics = list_topics(path)
    have = ', '.join(f'{t} [{k}]' for t, k in topics.items()) or 'nothing'
    for option, (topic, types) in wanted.items():
        if topic is None or topics.get(topic) in types:
            continue
        kind = topics.get(topic)
        what = ('is not in' if kind is None else
                f'is {kind}, not {" or ".join(t.rsplit("/", 1)[-1] for t in types)}, in')
        hint = (' (compressedDepth is not supported: record the raw depth topic)'
                if kind == COMPRESSED_IMAGE and IMAGE in types and COMPRESSED_IMAGE not in types
                else '')
        raise ValueError(f'{option} {topic} {what} {path}{hint}; it holds: {have}')
    return topics


def _connections_for(reader: Any, topics: Sequence[str], path: Any) -> list[Any]:
    """Return the connections of ``topics``; ValueError listing the bag's topics if one lacks."""
    connections = [c for c in reader.connections if c.topic in topics]
    missing = sorted(set(topics) - {c.topic for c in connections})
    if missing:
        have = ', '.join(f'{c.topic} [{c.msgtype}]' for c in reader.connections) or 'nothing'
        raise ValueError(f'topic(s) {", ".join(missing)} not in bag {path}; it holds: {have}')
    return connections


def read_topics(path: str | pathlib.Path, topics: Sequence[str]) -> Iterator[tuple[str, int, Any]]:
    """Read and deserialise every message of ``topics``.

    Args:
        path: Bag directory, ``.mcap`` or ``.db3`` file.
        topics: Topic names; each must be in the bag.

    Yields:
        ``(topic, log_time_ns, msg)`` in log-time order; ``msg`` is a rosbags message (use
        :func:`header_stamp_ns` for its header stamp).

    Raises:
        FileNotFoundError: If there is no bag at ``path``.
        ValueError: If a topic is not in the bag (the message lists the bag's topics).
    """
    store = get_typestore()
    with _open_reader(path) as reader:
        connections = _connections_for(reader, topics, path)
        for connection, log_time_ns, raw in reader.messages(connections=connections):
            yield connection.topic, log_time_ns, store.deserialize_cdr(raw, connection.msgtype)


def raw_message_groups(path: str | pathlib.Path, topics: Collection[str]
                       ) -> Iterator[list[tuple[Any, int, bytes]]]:
    """Yield the serialised messages of ``topics`` grouped by identical log time, in order.

    Args:
        path: Bag directory, ``.mcap`` or ``.db3`` file.
        topics: Topic names (absent ones are skipped).

    Yields:
        Lists of ``(connection, log_time_ns, cdr_bytes)`` sharing one log time; a connection's
        ``topic``, ``msgtype`` and definition let :class:`RawBagWriter` copy the message.
    """
    with _open_reader(path) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        group: list[tuple[Any, int, bytes]] = []
        for connection, log_time_ns, raw in reader.messages(connections=connections):
            if group and group[0][1] != log_time_ns:
                yield group
                group = []
            group.append((connection, log_time_ns, bytes(raw)))
        if group:
            yield group


def read_header_stamps(path: str | pathlib.Path,
                       topics: Sequence[str]) -> dict[str, list[int]]:
    """Header stamps [ns] of every message of ``topics``, sorted, without deserialising.

    A stamp of 0 falls back to the log time (as :class:`SyncedReader` pairs them).

    Raises:
        FileNotFoundError: If there is no bag at ``path``.
        ValueError: If a topic is not in the bag.
    """
    stamps: dict[str, list[int]] = {t: [] for t in topics}
    with _open_reader(path) as reader:
        connections = _connections_for(reader, topics, path)
        for connection, log_time_ns, raw in reader.messages(connections=connections):
            stamps[connection.topic].append(cdr_header_stamp_ns(raw) or log_time_ns)
    return {topic: sorted(values) for topic, values in stamps.items()}


def pair_by_stamp(images: Sequence[tuple[int, X]], depths: Sequence[tuple[int, Y]],
                  tolerance_ns: int) -> list[tuple[X, Y, int]]:
    """Pair each image with the nearest-stamped depth within a tolerance, one-to-one.

    Rule: every (image, depth) with ``|depth_stamp - image_stamp| <= tolerance_ns`` is a
    candidate; candidates are accepted in order of increasing ``|dt|`` (ties: earlier image, then
    earlier depth) when neither member is taken yet. So each depth is used at most once, each
    accepted pair is the closest pair still available, and an image whose nearest depth went to
    a closer image takes its next-nearest depth within tolerance, or stays unpaired.

    Args:
        images: ``(stamp_ns, item)`` of the images, any order.
        depths: ``(stamp_ns, item)`` of the depths, any order.
        tolerance_ns: Largest accepted stamp difference [ns].

    Returns:
        ``(image_item, depth_item, dt_ns)`` sorted by image stamp, ``dt_ns = depth - image``.
    """
    if tolerance_ns < 0:
        raise ValueError(f'tolerance must be >= 0 ns, got {tolerance_ns}')
    image_order = sorted(range(len(images)), key=lambda i: images[i][0])
    depth_order = sorted(range(len(depths)), key=lambda j: depths[j][0])
    depth_stamps = [depths[j][0] for j in depth_order]
    candidates = []
    for rank_i, i in enumerate(image_order):
        stamp = images[i][0]
        lo = bisect.bisect_left(depth_stamps, stamp - tolerance_ns)
        hi = bisect.bisect_right(depth_stamps, stamp + tolerance_ns)
        candidates.extend((abs(depth_stamps[k] - stamp), rank_i, k) for k in range(lo, hi))
    candidates.sort()
    image_taken: set[int] = set()
    depth_taken: set[int] = set()
    pairs = []
    for _, rank_i, k in candidates:
        if rank_i in image_taken or k in depth_taken:
            continue
        image_taken.add(rank_i)
        depth_taken.add(k)
        pairs.append((rank_i, k))
    pairs.sort()
    out = []
    for rank_i, k in pairs:
        image_stamp, image_item = images[image_order[rank_i]]
        depth_stamp, depth_item = depths[depth_order[k]]
        out.append((image_item, depth_item, depth_stamp - image_stamp))
    return out


@dataclass
class SyncedFrame:
    """Messages of several topics that belong to one reference message.

    Attributes:
        index: Rank of the frame by reference header stamp (0-based).
        stamp_ns: Header stamp of the reference message [ns].
        msgs: ``{topic: rosbags message}`` for the reference and every paired topic.
        dt_ns: ``{topic: stamp - reference stamp}`` [ns] of each paired topic.
    """

    index: int
    stamp_ns: int
    msgs: dict[str, Any]
    dt_ns: dict[str, int] = field(default_factory=dict)


@dataclass
class SyncStats:
    """What :class:`SyncedReader` found.

    Attributes:
        messages: ``{topic: messages in the bag}``.
        matched: Reference messages paired on every other topic.
        max_abs_dt_ns: Largest ``|dt|`` [ns] among the frames returned.
    """

    messages: dict[str, int] = field(default_factory=dict)
    matched: int = 0
    max_abs_dt_ns: int = 0


class SyncedReader:
    """Frames of a reference topic paired by header stamp with other topics, read from a bag.

    Two passes over the bag. Construction runs the first: it reads only header stamps (from the
    serialised bytes, without deserialising images) and pairs each other topic to the reference
    topic with :func:`pair_by_stamp`; :attr:`stats` and ``len()`` are then known. Iteration runs
    the second: it deserialises just the paired messages, holding each only until its frame is
    complete. Nothing depends on timing: the same bag always gives the same frames.

    Args:
        path: Bag directory, ``.mcap`` or ``.db3`` file.
        reference_topic: Topic whose messages define the frames (the camera image).
        other_topics: Topics to pair with it (GT depth, a prediction topic, ...); a frame needs
            a partner on every one of them.
        tolerance_ns: Largest header-stamp difference accepted in a pair [ns].
        max_frames: Keep at most this many frames (the earliest by stamp).

    Raises:
        FileNotFoundError: If there is no bag at ``path``.
        ValueError: If a topic is missing from the bag.
    """

    def __init__(self, path: str | pathlib.Path, reference_topic: str,
                 other_topics: Sequence[str], tolerance_ns: int,
                 max_frames: int | None = None) -> None:
        self.path = path
        self.topics = [reference_topic, *[t for t in other_topics if t != reference_topic]]
        stamps: dict[str, list[tuple[int, int]]] = {t: [] for t in self.topics}
        with _open_reader(path) as reader:
            connections = _connections_for(reader, self.topics, path)
            for connection, log_time_ns, raw in reader.messages(connections=connections):
                stamp = cdr_header_stamp_ns(raw) or log_time_ns
                ordinal = len(stamps[connection.topic])
                stamps[connection.topic].append((stamp, ordinal))
        reference = stamps[reference_topic]
        partners: dict[str, dict[int, tuple[int, int]]] = {}
        for topic in self.topics[1:]:
            # Items are ordinals within their topic: reference ordinal -> (ordinal, dt).
            partners[topic] = {ref: (ordinal, dt) for ref, ordinal, dt
                               in pair_by_stamp(reference, stamps[topic], tolerance_ns)}
        frames = sorted((stamp, ordinal) for stamp, ordinal in reference
                        if all(ordinal in partners[t] for t in self.topics[1:]))
        self.stats = SyncStats(messages={t: len(v) for t, v in stamps.items()},
                               matched=len(frames))
        if max_frames is not None:
            frames = frames[:max(0, max_frames)]
        self._stamps = [stamp for stamp, _ in frames]
        # (topic, ordinal) -> frame index; the reference message belongs to its own frame.
        self._wanted: dict[tuple[str, int], int] = {}
        self._dt: list[dict[str, int]] = []
        for index, (_, ref_ordinal) in enumerate(frames):
            self._wanted[(reference_topic, ref_ordinal)] = index
            dts = {}
            for topic in self.topics[1:]:
                ordinal, dts[topic] = partners[topic][ref_ordinal]
                self._wanted[(topic, ordinal)] = index
            self._dt.append(dts)
        self.stats.max_abs_dt_ns = max(
            (abs(dt) for dts in self._dt for dt in dts.values()), default=0)

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def stamps_ns(self) -> list[int]:
        """Reference header stamp [ns] of each frame, in frame order (ascending)."""
        return list(self._stamps)

    def __iter__(self) -> Iterator[SyncedFrame]:
        if not self._stamps:
            return
        store = get_typestore()
        pending: dict[int, dict[str, tuple[str, bytes]]] = {}
        ready: list[int] = []
        next_index = 0
        counters = dict.fromkeys(self.topics, 0)
        with _open_reader(self.path) as reader:
            connections = _connections_for(reader, self.topics, self.path)
            for connection, _, raw in reader.messages(connections=connections):
                topic = connection.topic
                ordinal = counters[topic]
                counters[topic] += 1
                index = self._wanted.get((topic, ordinal))
                if index is None:
                    continue
                parts = pending.setdefault(index, {})
                parts[topic] = (connection.msgtype, bytes(raw))
                if len(parts) == len(self.topics):
                    heapq.heappush(ready, index)
                while ready and ready[0] == next_index:
                    heapq.heappop(ready)
                    parts = pending.pop(next_index)
                    yield SyncedFrame(
                        index=next_index, stamp_ns=self._stamps[next_index],
                        msgs={t: store.deserialize_cdr(data, msgtype)
                              for t, (msgtype, data) in parts.items()},
                        dt_ns=self._dt[next_index])
                    next_index += 1
                    if next_index == len(self._stamps):
                        return


def first_message(path: str | pathlib.Path, topic: str) -> Any | None:
    """Return the first message of ``topic`` (e.g. a CameraInfo), or None if it has none."""
    for _, _, msg in read_topics(path, [topic]):
        return msg
    return None

