"""Writing bags: RGB-D frames, and serialised messages copied unchanged (replay's recording)."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from metric_solver_ros.bagio.messages import (
    BAG_VERSION,
    DEPTH_INFO,
    DEPTH_WRITE_ENCODINGS,
    STORAGES,
    camera_info_msg,
    depth_to_image_msg,
    get_typestore,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)
from metric_solver_ros.conversions import MAX_16UC1_MM, rounded_mm


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
