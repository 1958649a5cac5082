"""Pairing each image with its camera_info by header stamp, without rclpy.

The node keeps the recent camera infos and, for each image, uses the one with the image's stamp,
else the latest. image_transport's CameraPublisher sends the image first, then its info, so an
image newer than every info may wait a little for its own: otherwise a zoom or a resolution change
would go out one frame late, with the wrong intrinsics under this image's stamp. Whether to wait
is learned from the stream (:class:`CameraInfoPairing`). Time and the wait itself are injected,
so the rule runs in plain unit tests; the node passes the monotonic clock and a real condition
wait.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from metric_solver_ros.conversions import (
    MessageError,
    camera_info_image_size,
    camera_info_to_intrinsics,
)

#: Camera infos kept for pairing with images by stamp.
CAMERA_INFO_HISTORY = 30
#: Longest wait of an image for the camera_info with its stamp (when the camera pairs them) [s].
CAMERA_INFO_WAIT_S = 0.05
#: Weight of each image in the running share of images whose late camera_info came in time.
CAMERA_INFO_SCORE_RATE = 0.25


def header_stamp(header: Any) -> tuple[int, int]:
    """A header's stamp as ``(sec, nanosec)`` (ordered, exact: for pairing by stamp)."""
    return header.stamp.sec, header.stamp.nanosec


class PairedInfo(NamedTuple):
    """The camera_info of one image and what it says for that image.

    Attributes:
        info: The ``sensor_msgs/CameraInfo`` (the image's own, else the latest).
        intrinsics: ``(fx, fy, cx, cy)`` [px] of the image (binning and ROI applied, REP 104).
    """

    info: Any
    intrinsics: tuple[float, float, float, float]


class CameraInfoPairing:
    """Recent camera infos, and the one to use for each image (thread-safe).

    :meth:`add` runs in the camera_info callback, :meth:`for_image` in the worker once per
    frame. An image newer than every info waits up to ``wait_s`` for its own only while most
    such images recently got their own within that time: a running share (:attr:`score`
    >= 0.5) learned from every such image, also from those that did not wait (their info is
    checked against the deadline when it comes). A camera whose info comes later, or for some
    frames only, costs no waiting.

    Args:
        log: Where problems go: ``log.warn(key, text)`` (the node's
            :class:`~metric_solver_ros.process_life.ThrottledLog`).
        wait_s: Longest wait of an image for its own info [s].
        history: Infos kept.
        clock: Monotonic clock [s] (for the deadlines of images that did not wait).
        wait: ``wait(predicate, timeout_s) -> bool``, called with the pairing's lock held: wait
            until ``predicate()`` is true or ``timeout_s`` [s] passed, return ``predicate()``.
            Default: the lock's condition variable, which releases the lock while waiting so
            that :meth:`add` can deliver the info.
    """

    def __init__(self, log: Any, wait_s: float = CAMERA_INFO_WAIT_S,
                 history: int = CAMERA_INFO_HISTORY,
                 clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[Callable[[], bool], float], bool] | None = None) -> None:
        self._log = log
        self._wait_s = wait_s
        self._clock = clock
        self._arrived = threading.Condition()  # an RLock: an injected wait may call add()
        self._wait = wait if wait is not None else self._arrived.wait_for
        self._infos: collections.deque = collections.deque(maxlen=history)
        # Images (newer than every info) that did not wait: (stamp, deadline on the clock).
        self._pending: collections.deque = collections.deque(maxlen=history)
        self.score = 0.0
        """Recent share of images newer than every info whose own info came within the wait."""

    def add(self, info: Any) -> None:
        """Keep a camera_info that just arrived (and learn whether a wait would have caught it)."""
        with self._arrived:
            self._infos.append(info)
            stamp = header_stamp(info.header)
            for pending in self._pending:  # after its image: would a wait have caught it?
                if pending[0] == stamp:
                    self._pending.remove(pending)
                    self._score(self._clock() <= pending[1])
                    break
            self._arrived.notify_all()

    def for_image(self, header: Any, width: int, height: int) -> PairedInfo | None:
        """The camera info with the image's stamp, else the latest; None if none is usable.

        Args:
            header: The image's header (its stamp pairs).
            width: Image width [px].
            height: Image height [px].

        Returns:
            The info and the image's intrinsics [px], parsed once here; None (logged) when no
            info came yet, its intrinsics are invalid or it describes another image size.
        """
        stamp = header_stamp(header)

        def own() -> Any:
            return next((i for i in reversed(self._infos) if header_stamp(i.header) == stamp),
                        None)

        with self._arrived:
            now = self._clock()
            while self._pending and self._pending[0][1] < now:  # no info in time
                self._pending.popleft()
                self._score(False)
            info = own()
            if (info is None and self._infos
                    and header_stamp(self._infos[-1].header) < stamp):  # info may follow
                if self.score >= 0.5:
                    self._score(self._wait(lambda: own() is not None, self._wait_s))
                    info = own()
                else:  # no wait: learn whether one would have caught it
                    self._pending.append((stamp, now + self._wait_s))
            latest = self._infos[-1] if self._infos else None
        if latest is None:
            self._log.warn('no_camera_info', 'no camera_info received yet: publishing depth, '
                           'not depth/camera_info or points')
            return None
        info = info or latest
        try:
            intrinsics = camera_info_to_intrinsics(info)
        except MessageError as exc:
            self._log.warn('bad_camera_info', f'ignoring camera_info: {exc}')
            return None
        described = camera_info_image_size(info)  # binning / roi reduce the sensor's size
        if described != (width, height) and any(described):
            self._log.warn('camera_info_size', f'ignoring camera_info for a {described[0]}x'
                           f'{described[1]} image: the image is {width}x{height}')
            return None
        return PairedInfo(info, intrinsics)

    def _score(self, caught: bool) -> None:
        """Update the running share of images whose own info came within the wait."""
        self.score += CAMERA_INFO_SCORE_RATE * (float(caught) - self.score)
