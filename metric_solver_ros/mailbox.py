"""The node worker's inbox: only the latest image waits, so there is never a backlog (no rclpy)."""

from __future__ import annotations

import threading
from typing import Any


class Mailbox:
    """The latest image (a newer one replaces a pending one) and a re-decode request.

    Executor callbacks put, the worker thread takes.

    Attributes:
        dropped: Images replaced by a newer one before the worker took them, so far.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._image: Any = None
        self._redecode_ns: int | None = None  # when the pending re-decode was first asked for
        self.dropped = 0

    def put_image(self, msg: Any) -> None:
        """Leave ``msg`` for the worker, replacing (and counting) an image still pending."""
        with self._cond:
            if self._image is not None:
                self.dropped += 1
            self._image = msg
            self._cond.notify()

    def request_redecode(self, requested_ns: int = 0) -> None:
        """Ask the worker to decode the last frame again (with the anchors now in effect).

        Args:
            requested_ns: When the anchor change was asked for [ns, node clock]; requests
                that meet a pending one keep the first time (their latency counts from it).
        """
        with self._cond:
            if self._redecode_ns is None:
                self._redecode_ns = requested_ns
            self._cond.notify()

    def clear(self) -> None:
        """Drop the pending image and re-decode request (the node stops publishing)."""
        with self._cond:
            self._image, self._redecode_ns = None, None

    def wake(self) -> None:
        """Wake a waiting :meth:`take` (at shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout_s: float) -> tuple[str, Any] | None:
        """Wait up to ``timeout_s`` [s] for work.

        Returns:
            ``('image', msg)``, ``('redecode', requested_ns)`` or None.
        """
        with self._cond:
            if self._image is None and self._redecode_ns is None:
                self._cond.wait(timeout_s)
            if self._image is not None:
                msg = self._image
                # the new frame uses the new anchor: the pending re-decode goes with it
                self._image, self._redecode_ns = None, None
                return 'image', msg
            if self._redecode_ns is not None:
                requested_ns, self._redecode_ns = self._redecode_ns, None
                return 'redecode', requested_ns
            return None
