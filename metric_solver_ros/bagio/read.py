"""Reading bags: topics, messages in log-time order, stamps, pairing by header stamp."""

from __future__ import annotations

import bisect
import heapq
import pathlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metric_solver_ros.bagio.messages import (
    COMPRESSED_IMAGE,
    IMAGE,
    X,
    Y,
    cdr_header_stamp_ns,
    get_typestore,
)

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
