"""What the node does to a stream of results before publishing them (no rclpy).

Two corrections, applied in this order to each new result:

1. **Scale handover** (``anchor_modes.ScaleHandover``): when ``auto`` / ``roi`` switch anchors,
   the new anchor's depth starts at the old anchor's scale on the same frame and fades to its own,
   so the published world does not jump. An explicit anchor change (a user, a planner) cancels it.
2. **Temporal filter** (``temporal_filter.TemporalFilter``, parameter ``temporal_filter``): it
   resets itself on an anchor change and a scene cut; here also on a new camera frame id and
   on a stamp going back (a bag replayed from the start).

The point cloud follows the published depth: points move along their rays
(``temporal_filter.move_points``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from metric_solver_ros.anchor_modes import ScaleHandover
from metric_solver_ros.temporal_filter import TemporalFilter, move_points

if TYPE_CHECKING:
    from metric_solver_ros.temporal_filter import CameraMotion


class DepthStream:
    """The corrections of one published depth stream.

    Args:
        temporal_filter: The ``temporal_filter`` mode (``off``, ``scale``, ``full``).
    """

    def __init__(self, temporal_filter: str = 'off') -> None:
        self.filter = TemporalFilter(temporal_filter)
        self.handover = ScaleHandover()
        self._switched_from: float | None = None
        self._stream: tuple[str, int] | None = None

    def set_filter(self, mode: str) -> None:
        """Change the filter mode (a fresh history); no-op when it is the same."""
        if mode != self.filter.mode:
            self.filter = TemporalFilter(mode)

    def anchor_switched(self, old_m: float) -> None:
        """``auto`` / ``roi`` just moved away from ``old_m`` [m]: hand over at the next frame."""
        self._switched_from = float(old_m)

    def anchor_set(self) -> None:
        """An explicit anchor or mode change: no handover (the user asked for the new scale)."""
        self._switched_from = None
        self.handover.cancel()

    def correct(self, result: Any, frame_id: str, stamp_ns: int, anchors_m: Sequence[float],
                decode_at: Callable[[float], np.ndarray | None], stride: int = 1,
                max_range_m: float = math.inf, camera_motion: CameraMotion | None = None) -> Any:
        """The result to publish (``result`` itself when nothing changes).

        Args:
            result: An engine ``DepthResult`` (``depth_m``, ``points_m``, ``cloud``).
            frame_id: The image's frame id.
            stamp_ns: The image's stamp [ns].
            anchors_m: The anchors the result was decoded at [m].
            decode_at: ``anchor [m] -> depth [m]`` of the same frame (a re-decode of the cached
                features), or None when that is not possible; called once at a handover.
            stride: Pixel stride of ``result.points_m``.
            max_range_m: Points farther than this [m] become NaN.
            camera_motion: How the camera moved since the previous image (odometry), None
                when unknown: the temporal filter's stillness hint.
        """
        depth = result.depth_m
        if self._switched_from is not None:
            before = decode_at(self._switched_from)
            self._switched_from = None
            if before is not None:
                self.handover.start(before, depth)
        if self.handover.active:
            depth = self.handover.apply(depth)
        stream = (frame_id, stamp_ns)
        if self._stream is not None and (frame_id != self._stream[0]
                                         or stamp_ns < self._stream[1]):
            self.filter.reset()
        self._stream = stream
        if self.filter.mode != 'off':
            depth = self.filter.apply(depth, tuple(anchors_m), camera_motion)
        if depth is result.depth_m:
            return result
        points, cloud = result.points_m, result.cloud
        if points is not None:
            points = move_points(points, result.depth_m, depth, stride, max_range_m)
            if cloud is not None:  # the packed cloud too (its colours stay as they are)
                cloud = cloud.copy()
                cloud[..., :3] = points
                points = cloud[..., :3]
        # the engine's statistics are of the raw depth: the message computes them anew
        return dataclasses.replace(result, depth_m=depth, points_m=points, cloud=cloud,
                                   statistics=None)
