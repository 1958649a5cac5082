"""Camera poses in rosbags: ``tf2_msgs/TFMessage`` on ``/tf`` and ``/tf_static``, both ways.

Writing: :func:`tf_message` turns a 4x4 ``T_parent_child`` into a TFMessage (quaternions with
``transforms3d``); :func:`metric_solver_ros.bagio.write_rgbd_bag` writes one per posed frame.

Reading: :class:`PoseLookup` collects every transform of a bag's tf topics and answers
``T_root_frame`` for a frame at a stamp by walking up the tree (``map -> odom -> base_link ->
camera_link -> camera_optical_frame``, each edge from ``/tf`` or ``/tf_static``), and
``T_target_source`` between any two connected frames (:meth:`PoseLookup.transform`, tf2's
``lookupTransform``: e.g. a LiDAR's points into a camera's optical frame, through their common
parent), with a :class:`TransformError` that names both frames and the tree when there is none.
A dynamic edge is interpolated between the two transforms that bracket the stamp (translation
linearly, rotation by spherical linear interpolation, ``transforms3d``'s quaternions) when both
lie within the tolerance, else the nearest within the tolerance is used; with none, no pose.
"""

from __future__ import annotations

import bisect
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
#: Topics read for transforms (whichever the bag has).
TF_TOPICS = (TF_TOPIC, TF_STATIC_TOPIC)
#: Default tolerance [ns] of a dynamic transform used at a stamp (10 Hz tf brackets any stamp).
TF_TOLERANCE_NS = 50_000_000


class TransformError(ValueError):
    """No transform between two frames at a time; the message names both frames and the tree."""


def tf_message(pose: np.ndarray, stamp_ns: int, parent_frame: str, child_frame: str) -> Any:
    """Build a ``tf2_msgs/TFMessage`` (rosbags type) holding one transform.

    Args:
        pose: 4x4 ``T_parent_child`` (a proper rotation and a translation [m]).
        stamp_ns: Header stamp [ns].
        parent_frame: ``header.frame_id`` (e.g. ``map``).
        child_frame: ``child_frame_id`` (e.g. the camera optical frame).

    Returns:
        The message.
    """
    from transforms3d.quaternions import mat2quat

    from metric_solver_ros.bagio.messages import _header, get_typestore

    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.allclose(pose[3], (0, 0, 0, 1)):
        raise ValueError(f'expected a 4x4 rigid transform, got shape {pose.shape}')
    if not np.isclose(np.linalg.det(pose[:3, :3]), 1.0, atol=1e-6):
        raise ValueError('the rotation of a transform must be proper (det +1)')
    types = get_typestore().types
    w, x, y, z = mat2quat(pose[:3, :3])
    tx, ty, tz = (float(v) for v in pose[:3, 3])
    stamped = types['geometry_msgs/msg/TransformStamped'](
        header=_header(stamp_ns, parent_frame), child_frame_id=child_frame,
        transform=types['geometry_msgs/msg/Transform'](
            translation=types['geometry_msgs/msg/Vector3'](x=tx, y=ty, z=tz),
            rotation=types['geometry_msgs/msg/Quaternion'](x=float(x), y=float(y), z=float(z),
                                                           w=float(w))))
    return types[TF_MESSAGE](transforms=[stamped])


def transform_to_matrix(transform: Any) -> np.ndarray:
    """4x4 matrix of a ``geometry_msgs/Transform`` (rosbags or rclpy message)."""
    from transforms3d.quaternions import quat2mat

    q = transform.rotation
    t = transform.translation
    pose = np.eye(4)
    pose[:3, :3] = quat2mat((q.w, q.x, q.y, q.z))
    pose[:3, 3] = (t.x, t.y, t.z)
    return pose


def _interpolate(a: np.ndarray, b: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) a + weight b`` for rigid transforms (slerp of the rotation)."""
    from transforms3d.quaternions import mat2quat, qinverse, qmult, qpow, quat2mat

    qa, qb = mat2quat(a[:3, :3]), mat2quat(b[:3, :3])
    if np.dot(qa, qb) < 0:  # the shorter way round
        qb = -qb
    out = np.eye(4)
    out[:3, :3] = quat2mat(qmult(qa, qpow(qmult(qinverse(qa), qb), weight)))
    out[:3, 3] = (1.0 - weight) * a[:3, 3] + weight * b[:3, 3]
    return out


@dataclass
class _Edge:
    """Transforms from one child frame to its parent: static, or dynamic sorted by stamp."""

    parent: str
    static: np.ndarray | None = None
    stamps_ns: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)

    def at(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        if self.static is not None:
            return self.static
        k = bisect.bisect_left(self.stamps_ns, stamp_ns)
        before = k - 1 if k > 0 else None
        after = k if k < len(self.stamps_ns) else None
        if after is not None and self.stamps_ns[after] == stamp_ns:
            return self.poses[after]
        near = [i for i in (before, after)
                if i is not None and abs(self.stamps_ns[i] - stamp_ns) <= tolerance_ns]
        if len(near) == 2:
            t0, t1 = self.stamps_ns[before], self.stamps_ns[after]
            return _interpolate(self.poses[before], self.poses[after],
                                (stamp_ns - t0) / (t1 - t0))
        if near:
            return self.poses[near[0]]
        return None


class PoseLookup:
    """Poses of frames over time from the transforms of a bag (see the module docstring).

    Args:
        transforms: ``(stamp_ns, parent, child, 4x4 T_parent_child, static)`` in any order.
    """

    def __init__(self, transforms: Sequence[tuple[int, str, str, np.ndarray, bool]]) -> None:
        self._edges: dict[str, _Edge] = {}
        for stamp_ns, parent, child, pose, static in sorted(transforms, key=lambda t: t[0]):
            edge = self._edges.setdefault(child, _Edge(parent))
            edge.parent = parent  # a re-parented frame: the latest parent wins
            if static:
                edge.static = pose
            else:
                edge.stamps_ns.append(int(stamp_ns))
                edge.poses.append(pose)

    @classmethod
    def from_bag(cls, path: str | pathlib.Path,
                 topics: Sequence[str] = TF_TOPICS) -> PoseLookup | None:
        """Read the tf topics a bag has; None when it has none of them.

        Args:
            path: Bag directory, ``.mcap`` or ``.db3`` file.
            topics: Candidate tf topics; ``/tf_static`` (or any name ending in ``_static``)
                holds static transforms.
        """
        from metric_solver_ros.bagio import header_stamp_ns, list_topics, read_topics

        present = [t for t, kind in list_topics(path).items() if t in topics and kind == TF_MESSAGE]
        if not present:
            return None
        transforms = []
        for topic, _, msg in read_topics(path, present):
            for stamped in msg.transforms:
                transforms.append((header_stamp_ns(stamped), stamped.header.frame_id.lstrip('/'),
                                   stamped.child_frame_id.lstrip('/'),
                                   transform_to_matrix(stamped.transform),
                                   topic.endswith('_static')))
        return cls(transforms)

    @property
    def frames(self) -> set[str]:
        """Every frame named as a child or a parent."""
        return set(self._edges) | {edge.parent for edge in self._edges.values()}

    def lookup(self, frame_id: str, stamp_ns: int,
               tolerance_ns: int = 50_000_000) -> tuple[str, np.ndarray] | None:
        """``(root frame, 4x4 T_root_frame)`` at ``stamp_ns``, or None when an edge is missing.

        Args:
            frame_id: The frame (e.g. the image's ``header.frame_id``).
            stamp_ns: When [ns].
            tolerance_ns: Largest distance [ns] to a dynamic transform used.
        """
        frame_id = frame_id.lstrip('/')
        if frame_id not in self._edges:
            return None
        pose = np.eye(4)
        seen = {frame_id}
        while frame_id in self._edges:
            edge = self._edges[frame_id]
            step = edge.at(stamp_ns, tolerance_ns)
            if step is None:
                return None
            pose = step @ pose
            frame_id = edge.parent
            if frame_id in seen:
                raise ValueError(f'the transforms form a loop through {frame_id}')
            seen.add(frame_id)
        return frame_id, pose

    def describe(self) -> str:
        """The edges as text, for error messages: ``base_link -> lidar (static), ...``."""
        if not self._edges:
            return 'no transforms'
        return ', '.join(f'{e.parent} -> {child} ' + ('(static)' if e.static is not None else
                                                     f'(/tf, {len(e.stamps_ns)} transforms)')
                         for child, e in sorted(self._edges.items()))

    def _up(self, frame_id: str) -> list[str]:
        """``frame_id``, its parent, ..., its root."""
        chain = [frame_id]
        while chain[-1] in self._edges and len(chain) <= len(self._edges):  # a loop ends too
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def transform(self, target: str, source: str, stamp_ns: int,
                  tolerance_ns: int = TF_TOLERANCE_NS) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns``: points given in ``source`` -> ``target``.

        The chain runs up from both frames to their nearest common ancestor (tf2's
        ``lookupTransform(target, source, time)``).

        Args:
            target: Frame the points are wanted in (e.g. a camera's optical frame).
            source: Frame the points are given in (e.g. a LiDAR's frame).
            stamp_ns: Time of the points [ns].
            tolerance_ns: Largest distance [ns] to a dynamic transform used.

        Raises:
            TransformError: The frames are not connected (both named, with every edge the bag
                has), or a moving edge has no transform within the tolerance.
        """
        target, source = target.lstrip('/'), source.lstrip('/')
        up_source, up_target = self._up(source), self._up(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            missing = [f'{f!r} is in no transform' for f in (source, target)
                       if f not in self.frames]
            why = '; '.join(missing) or 'they are in separate trees'
            raise TransformError(f'no transform chain from frame {source!r} to frame '
                                 f'{target!r} ({why}); the bag has: {self.describe()}')
        poses = []  # T_common_source, then T_common_target
        for chain in (up_source, up_target):
            pose = np.eye(4)
            for child in chain[:chain.index(common)]:
                edge = self._edges[child]
                step = edge.at(stamp_ns, tolerance_ns)
                if step is None:
                    span = (f'{edge.stamps_ns[0] / 1e9:.3f} s to {edge.stamps_ns[-1] / 1e9:.3f} s'
                            if edge.stamps_ns else 'never')
                    raise TransformError(
                        f'no transform {edge.parent} -> {child} within {tolerance_ns / 1e6:g} ms '
                        f'of {stamp_ns / 1e9:.3f} s (/tf has it {span}), on the chain from '
                        f'{source!r} to {target!r}')
                pose = step @ pose
            poses.append(pose)
        return np.linalg.inv(poses[1]) @ poses[0]
