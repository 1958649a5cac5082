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
        self._redecode = False
        self.dropped = 0

    def put_image(self, msg: Any) -> None:
        """Leave ``msg`` for the worker, replacing (and counting) an image still pending."""
        with self._cond:
            if self._image is not None:
                self.dropped += 1
            self._image = msg
            self._cond.notify()

    def request_redecode(self) -> None:
        """Ask the worker to decode the last frame again (with the anchors now in effect)."""
        with self._cond:
            self._redecode = True
            self._cond.notify()

    def wake(self) -> None:
        """Wake a waiting :meth:`take` (at shutdown)."""
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout_s: float) -> tuple[str, Any] | None:
        """Wait up to ``timeout_s`` [s] for work: ('image', msg), ('redecode', None) or None."""
        with self._cond:
            if self._image is None and not self._redecode:
                self._cond.wait(timeout_s)
            if self._image is not None:
                msg = self._image
                self._image, self._redecode = None, False  # the new frame uses the new anchor
                return 'image', msg
            if self._redecode:
                self._redecode = False
                return 'redecode', None
            return None
