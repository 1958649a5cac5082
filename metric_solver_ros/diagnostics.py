"""The node's health on ``/diagnostics``: statistics without rclpy, and the message they make.

:class:`DepthStatistics` counts what the node does (images in, frames out, latencies, engine
failures) on an injected monotonic clock and turns it into a :class:`HealthReport` with the
levels of ``diagnostic_msgs/DiagnosticStatus``: WARN when the output rate is below
``expected_rate_hz`` (0 = no check) or no image came for :data:`NO_IMAGE_WARN_S` while someone
is subscribed, ERROR while an engine failure is younger than :data:`ERROR_HOLD_S`. The node
publishes :func:`diagnostic_array` of it once a second. ``diagnostic_msgs`` is imported inside
that function, so the statistics run in plain unit tests.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Levels of diagnostic_msgs/DiagnosticStatus (OK, WARN, ERROR), as integers.
OK, WARN, ERROR = 0, 1, 2
#: Seconds of history behind the rate and the latency percentiles.
WINDOW_S = 5.0
#: Without an image for this long [s] while someone is subscribed: WARN.
NO_IMAGE_WARN_S = 2.0
#: An engine failure keeps the level at ERROR this long [s].
ERROR_HOLD_S = 10.0
#: Seconds between two /diagnostics messages.
PERIOD_S = 1.0
#: The keys of every status, in order (a contract: monitoring reads them by name).
KEYS = ('rate_hz', 'latency_p50_ms', 'latency_p95_ms', 'inference_p50_ms', 'frames_skipped',
        'anchor', 'device', 'precision', 'model')


@dataclass(frozen=True)
class HealthReport:
    """One diagnostic status, without the message type.

    Attributes:
        level: :data:`OK`, :data:`WARN` or :data:`ERROR`.
        message: What is wrong (every problem, ``; ``-separated), else a one-line summary.
        values: :data:`KEYS` -> value as text.
    """

    level: int
    message: str
    values: dict[str, str]


def _figure(value: float) -> str:
    return 'nan' if math.isnan(value) else f'{value:.1f}'


class DepthStatistics:
    """What the node did recently (thread-safe: the worker records, a timer reports).

    Args:
        clock: Monotonic clock [s].
        window_s: History behind the rate and the percentiles [s].
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 window_s: float = WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._lock = threading.Lock()
        self.restart()

    def restart(self) -> None:
        """Forget everything (the node starts publishing now)."""
        with self._lock:
            self._started_s = self._clock()
            self._last_image_s: float | None = None
            # (time [s], latency [ms], inference [ms], a new image rather than a re-decode)
            self._frames: collections.deque = collections.deque()
            self._failures: collections.deque = collections.deque()  # (time [s], reason)

    def image_received(self) -> None:
        """An image arrived (before any check of its content)."""
        with self._lock:
            self._last_image_s = self._clock()

    def frame_published(self, latency_ms: float, inference_ms: float, redecoded: bool) -> None:
        """A result went out; ``latency_ms`` may be NaN (no stamp, or no clock yet)."""
        with self._lock:
            self._frames.append((self._clock(), latency_ms, inference_ms, not redecoded))

    def engine_failed(self, reason: str) -> None:
        """The engine refused or failed a frame (bad image, out of memory, an exception)."""
        with self._lock:
            self._failures.append((self._clock(), reason))

    def report(self, facts: Mapping[str, str], frames_skipped: int, expected_rate_hz: float,
               subscribed: bool, image_topic: str) -> HealthReport:
        """The status now.

        Args:
            facts: ``anchor``, ``device``, ``precision`` and ``model`` as text.
            frames_skipped: Images replaced by a newer one before inference, so far.
            expected_rate_hz: Rate [Hz] below which the level is WARN; 0 = no check.
            subscribed: Whether anyone subscribes to an output.
            image_topic: The resolved image topic (for the message).
        """
        with self._lock:
            now = self._clock()
            while self._frames and self._frames[0][0] < now - self._window_s:
                self._frames.popleft()
            while self._failures and self._failures[0][0] < now - ERROR_HOLD_S:
                self._failures.popleft()
            frames = list(self._frames)
            failures = list(self._failures)
            last_image_s = self._last_image_s
            started_s = self._started_s
        span_s = min(self._window_s, max(now - started_s, 1e-3))
        rate_hz = sum(1 for frame in frames if frame[3]) / span_s
        latencies = [f[1] for f in frames if not math.isnan(f[1])]
        p50, p95 = np.percentile(latencies, (50, 95)) if latencies else (math.nan, math.nan)
        inference = [f[2] for f in frames]
        values = {'rate_hz': f'{rate_hz:.2f}', 'latency_p50_ms': _figure(float(p50)),
                  'latency_p95_ms': _figure(float(p95)),
                  'inference_p50_ms': _figure(float(np.median(inference)) if inference
                                              else math.nan),
                  'frames_skipped': str(frames_skipped),
                  **{key: str(facts[key]) for key in ('anchor', 'device', 'precision', 'model')}}
        level, problems = OK, []
        if failures:
            level = ERROR
            problems.append(f'engine failed {len(failures)} time(s) in the last '
                            f'{ERROR_HOLD_S:g} s, last: {failures[-1][1]}')
        if expected_rate_hz > 0 and rate_hz < expected_rate_hz:
            level = max(level, WARN)
            problems.append(f'output rate {rate_hz:.1f} Hz is below expected_rate_hz '
                            f'{expected_rate_hz:g} Hz')
        quiet_s = now - (last_image_s if last_image_s is not None else started_s)
        if subscribed and quiet_s >= NO_IMAGE_WARN_S:
            level = max(level, WARN)
            problems.append(f'no image on {image_topic} for {quiet_s:.1f} s')
        message = '; '.join(problems) or (f'{rate_hz:.1f} Hz, latency p50 '
                                          f'{values["latency_p50_ms"]} ms')
        return HealthReport(level, message, values)


def diagnostic_array(report: HealthReport, name: str, hardware_id: str, stamp: Any) -> Any:
    """The ``/diagnostics`` message of one report.

    Args:
        report: The node's status.
        name: Status name (``<node name>: depth``).
        hardware_id: The device the network runs on.
        stamp: ``builtin_interfaces/Time`` of the message.

    Returns:
        A ``diagnostic_msgs/DiagnosticArray`` with one status.
    """
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    levels = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN,
              ERROR: DiagnosticStatus.ERROR}
    status = DiagnosticStatus(level=levels[report.level], name=name, message=report.message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=key, value=report.values[key])
                                      for key in KEYS])
    msg = DiagnosticArray(status=[status])
    msg.header.stamp = stamp
    return msg
