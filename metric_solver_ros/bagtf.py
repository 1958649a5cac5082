"""Camera poses in rosbags: ``tf2_msgs/TFMessage`` on ``/tf`` and ``/tf_static``, both ways.

Writing: :func:`tf_message` turns a 4x4 ``T_parent_child`` into a TFMessage (quaternions with
``transforms3d``); :func:`metric_solver_ros.bagio.write_rgbd_bag` writes one per posed frame.

Reading: :class:`PoseLookup` collects every transform of a bag's tf topics and answers
``T_root_frame`` for a frame at a stamp by walking up the tree (``map -> odom -> base_link ->
camera_link -> camera_optical_frame``, each edge from ``/tf`` or ``/tf_static``). A dynamic edge
is interpolated between the two transforms that bracket the stamp (translation linearly,
rotation by normalised quaternion interpolation, exact enough between tf samples) when both lie
within the tolerance, else the nearest within the tolerance is used; with none, no pose.
"""

from __future__ import annotations

import bisect
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
#: Topics read for transforms (whichever the bag has).
TF_TOPICS = ('/tf', '/tf_static')


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

    from metric_solver_ros.bagio import _header, get_typestore

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
    """``(1 - weight) a + weight b`` for rigid transforms (nlerp of the rotation)."""
    from transforms3d.quaternions import mat2quat, quat2mat

    qa, qb = mat2quat(a[:3, :3]), mat2quat(b[:3, :3])
    if np.dot(qa, qb) < 0:  # the shorter way round
        qb = -qb
    q = (1.0 - weight) * qa + weight * qb
    out = np.eye(4)
    out[:3, :3] = quat2mat(q / np.linalg.norm(q))
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
