"""The transform tree of a bag: ``/tf_static`` and ``/tf`` read into a buffer, chains looked up.

What tf2's buffer does for a recorded bag, without ROS: every ``geometry_msgs/TransformStamped``
is an edge ``parent -> child`` holding the child's pose in the parent frame (so it maps points
given in the child frame into the parent frame). :meth:`TfTree.lookup` composes the edges of the
chain between two frames, ``T_target_source`` (tf2's ``lookupTransform(target, source, t)``):
points in ``source`` -> points in ``target``. Static edges hold at any time; the edges of ``/tf``
are interpolated at the requested stamp (translation linearly, rotation by spherical linear
interpolation of the quaternions). Quaternion maths is ``transforms3d``'s (w, x, y, z order; ROS
messages store x, y, z, w).

Transforms are 4x4 homogeneous ``float64`` matrices throughout.
"""

from __future__ import annotations

import bisect
import pathlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
#: How far [ns] a lookup may lie outside the stamps ``/tf`` recorded for a moving edge: within
#: it the nearest recorded pose holds (a scan stamped just after the last pose); beyond, an error.
TF_EXTRAPOLATION_NS = 100_000_000


class TransformError(ValueError):
    """No transform between two frames at a time; the message names both frames and the tree."""


def quaternion_to_matrix(quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """3x3 rotation of a ROS quaternion ``(x, y, z, w)`` (normalised first).

    Raises:
        TransformError: For a zero (or non-finite) quaternion.
    """
    import transforms3d.quaternions as tq

    x, y, z, w = (float(v) for v in quaternion_xyzw)
    q = np.array([w, x, y, z])
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-9:
        raise TransformError(f'quaternion (x={x}, y={y}, z={z}, w={w}) is not a rotation')
    return tq.quat2mat(q / norm)


def matrix_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """ROS quaternion ``(x, y, z, w)`` of a 3x3 rotation matrix (``w >= 0``)."""
    import transforms3d.quaternions as tq

    w, x, y, z = tq.mat2quat(np.asarray(rotation, dtype=np.float64))
    sign = -1.0 if w < 0 else 1.0
    return sign * x, sign * y, sign * z, sign * w


def make_transform(rotation: np.ndarray | None = None,
                   translation_m: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 transform from a 3x3 rotation (default identity) and a translation [m]."""
    matrix = np.eye(4)
    if rotation is not None:
        matrix[:3, :3] = rotation
    matrix[:3, 3] = translation_m
    return matrix


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (``R^T``, ``-R^T t``)."""
    rotation, translation = transform[:3, :3], transform[:3, 3]
    return make_transform(rotation.T, -rotation.T @ translation)


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points [N, 3] (same dtype out as in)."""
    rotation = transform[:3, :3].astype(points.dtype)
    return points @ rotation.T + transform[:3, 3].astype(points.dtype)


def interpolate(before: np.ndarray, after: np.ndarray, fraction: float) -> np.ndarray:
    """The transform ``fraction`` (0..1) of the way from ``before`` to ``after``.

    Translation linearly, rotation by slerp along the shorter arc.
    """
    import transforms3d.quaternions as tq

    q0 = tq.mat2quat(before[:3, :3])
    q1 = tq.mat2quat(after[:3, :3])
    if float(np.dot(q0, q1)) < 0.0:  # q and -q are one rotation: take the shorter arc
        q1 = -q1
    delta = tq.qmult(tq.qinverse(q0), q1)
    rotation = tq.quat2mat(tq.qmult(q0, tq.qpow(delta, fraction)))
    translation = (1.0 - fraction) * before[:3, 3] + fraction * after[:3, 3]
    return make_transform(rotation, translation)


def transform_from_msg(transform: Any) -> np.ndarray:
    """4x4 matrix of a ``geometry_msgs/Transform`` (rosbags or rclpy message)."""
    t, r = transform.translation, transform.rotation
    return make_transform(quaternion_to_matrix((r.x, r.y, r.z, r.w)), (t.x, t.y, t.z))


@dataclass
class _Edge:
    """One ``parent -> child`` edge: static, or the poses ``/tf`` recorded, sorted by stamp."""

    parent: str
    static: bool
    stamps_ns: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)

    def at(self, stamp_ns: int | None, child: str) -> np.ndarray:
        """``T_parent_child`` at ``stamp_ns`` (any time for a static edge)."""
        if self.static:
            return self.matrices[-1]
        first, last = self.stamps_ns[0], self.stamps_ns[-1]
        if stamp_ns is None:
            raise TransformError(f'{self.parent} -> {child} moves (/tf): a lookup needs a stamp')
        if stamp_ns <= first or stamp_ns >= last:
            gap = first - stamp_ns if stamp_ns <= first else stamp_ns - last
            if gap > TF_EXTRAPOLATION_NS:
                raise TransformError(
                    f'/tf has {self.parent} -> {child} from {first / 1e9:.3f} s to '
                    f'{last / 1e9:.3f} s, not at {stamp_ns / 1e9:.3f} s ({gap / 1e6:.0f} ms '
                    f'outside; at most {TF_EXTRAPOLATION_NS / 1e6:.0f} ms is bridged)')
            return self.matrices[0] if stamp_ns <= first else self.matrices[-1]
        k = bisect.bisect_right(self.stamps_ns, stamp_ns)
        t0, t1 = self.stamps_ns[k - 1], self.stamps_ns[k]
        return interpolate(self.matrices[k - 1], self.matrices[k], (stamp_ns - t0) / (t1 - t0))


class TfTree:
    """A tf2-like buffer of a whole recording: static and timed edges, chain lookups.

    A frame has at most one parent (as in tf2); ``/tf_static`` edges hold at every time, a
    static edge given again replaces the earlier one (latched re-publications).
    """

    def __init__(self) -> None:
        self._edges: dict[str, _Edge] = {}  # child -> its edge to the parent

    def add(self, parent: str, child: str, transform: np.ndarray, *, static: bool,
            stamp_ns: int = 0) -> None:
        """Add the edge ``parent -> child`` (``transform`` = ``T_parent_child``).

        Raises:
            TransformError: The child already has another parent, or the edge was static and is
                now timed (or the reverse).
        """
        parent, child = parent.lstrip('/'), child.lstrip('/')  # tf2 ignores a leading slash
        if parent == child:
            raise TransformError(f'transform from {child!r} to itself')
        edge = self._edges.get(child)
        if edge is not None and (edge.parent != parent or edge.static != static):
            what = 'static' if edge.static else '/tf'
            raise TransformError(
                f'frame {child!r} has two parents or kinds: {edge.parent!r} ({what}) and '
                f'{parent!r} ({"static" if static else "/tf"}); a tf tree gives each frame one')
        if edge is None:
            edge = self._edges[child] = _Edge(parent, static)
        matrix = np.asarray(transform, dtype=np.float64)
        if static:
            edge.stamps_ns, edge.matrices = [int(stamp_ns)], [matrix]
            return
        k = bisect.bisect_left(edge.stamps_ns, int(stamp_ns))
        if k < len(edge.stamps_ns) and edge.stamps_ns[k] == int(stamp_ns):
            edge.matrices[k] = matrix  # a repeated stamp: keep the latest
        else:
            edge.stamps_ns.insert(k, int(stamp_ns))
            edge.matrices.insert(k, matrix)

    def add_message(self, msg: Any, *, static: bool) -> None:
        """Add every ``TransformStamped`` of a ``tf2_msgs/TFMessage``."""
        from metric_solver_ros.bagio import header_stamp_ns

        for stamped in msg.transforms:
            self.add(stamped.header.frame_id, stamped.child_frame_id,
                     transform_from_msg(stamped.transform), static=static,
                     stamp_ns=header_stamp_ns(stamped))

    @classmethod
    def from_bag(cls, path: str | pathlib.Path) -> TfTree:
        """Read ``/tf_static`` and ``/tf`` (those the bag has; none: an empty tree)."""
        from metric_solver_ros.bagio import list_topics, read_topics

        tree = cls()
        topics = [t for t, kind in list_topics(path).items()
                  if t in (TF_TOPIC, TF_STATIC_TOPIC) and kind == TF_MESSAGE]
        if topics:
            for topic, _, msg in read_topics(path, topics):
                tree.add_message(msg, static=topic == TF_STATIC_TOPIC)
        return tree

    @property
    def frames(self) -> list[str]:
        """Every frame named by an edge, sorted."""
        names = set(self._edges) | {e.parent for e in self._edges.values()}
        return sorted(names)

    def describe(self) -> str:
        """The edges as text, for error messages: ``base_link -> lidar (static), ...``."""
        if not self._edges:
            return 'no transforms (no /tf_static or /tf in the bag)'
        parts = [f'{e.parent} -> {child} ' + ('(static)' if e.static else
                                             f'(/tf, {len(e.stamps_ns)} poses)')
                 for child, e in sorted(self._edges.items())]
        return ', '.join(parts)

    def _ancestors(self, frame: str) -> list[str]:
        """``frame``, its parent, ..., the root (cycles cut)."""
        chain = [frame]
        while chain[-1] in self._edges and len(chain) <= len(self._edges):
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def chain(self, target: str, source: str) -> list[str]:
        """The frames from ``source`` to ``target`` through their nearest common ancestor.

        Raises:
            TransformError: The frames are not connected; the message names both and lists the
                tree the bag has.
        """
        target, source = target.lstrip('/'), source.lstrip('/')
        up_source, up_target = self._ancestors(source), self._ancestors(target)
        common = next((f for f in up_source if f in up_target), None)
        if common is None:
            known = set(self.frames)
            missing = [f'{f!r} is in no transform' for f in (source, target) if f not in known]
            raise TransformError(
                f'no transform chain from frame {source!r} to frame {target!r}'
                + (f' ({"; ".join(missing)})' if missing else ' (they are in separate trees)')
                + f'; the bag has: {self.describe()}')
        return (up_source[:up_source.index(common) + 1]
                + list(reversed(up_target[:up_target.index(common)])))

    def is_static(self, target: str, source: str) -> bool:
        """Whether every edge of the chain between the frames is static."""
        frames = self.chain(target, source)
        pairs = zip(frames[:-1], frames[1:], strict=True)
        return all(self._edges[self._child_of(a, b)].static for a, b in pairs)

    def _child_of(self, a: str, b: str) -> str:
        """Of two adjacent frames, the one that is the other's child."""
        return a if a in self._edges and self._edges[a].parent == b else b

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns``: maps points given in ``source`` into ``target``.

        Args:
            target: Frame the points are wanted in (e.g. the camera's optical frame).
            source: Frame the points are given in (e.g. the LiDAR's frame).
            stamp_ns: Time of the points [ns]; needed when an edge of the chain moves (``/tf``).

        Raises:
            TransformError: No chain, or a moving edge has no pose near ``stamp_ns``.
        """
        frames = self.chain(target, source)
        result = np.eye(4)  # T_current_source, walking from source to target
        for a, b in zip(frames[:-1], frames[1:], strict=True):
            child = self._child_of(a, b)
            edge = self._edges[child]
            t_parent_child = edge.at(stamp_ns, child)
            step = t_parent_child if child == a else invert(t_parent_child)  # T_b_a
            result = step @ result
        return result


def tf_message(transforms: Iterable[tuple[str, str, np.ndarray]], stamp_ns: int) -> Any:
    """Build a ``tf2_msgs/TFMessage`` (rosbags type) of ``(parent, child, T_parent_child)``."""
    from metric_solver_ros.bagio import get_typestore

    types = get_typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamped = []
    for parent, child, matrix in transforms:
        x, y, z, w = matrix_to_quaternion(matrix[:3, :3])
        tx, ty, tz = (float(v) for v in matrix[:3, 3])
        header = types['std_msgs/msg/Header'](
            stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec), frame_id=parent)
        stamped.append(types['geometry_msgs/msg/TransformStamped'](
            header=header, child_frame_id=child,
            transform=types['geometry_msgs/msg/Transform'](
                translation=types['geometry_msgs/msg/Vector3'](x=tx, y=ty, z=tz),
                rotation=types['geometry_msgs/msg/Quaternion'](x=x, y=y, z=z, w=w))))
    return types[TF_MESSAGE](transforms=stamped)
