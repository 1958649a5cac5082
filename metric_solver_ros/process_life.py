"""The node process's life around the node: start-up errors, logs, signals and exit.

Logs: :class:`ThrottledLog` for repeated problems, and :func:`forward_package_logs` for the
engine's own Python log lines (to the node's rclpy logger, or the CLI's stderr).

Nothing here imports rclpy at module level, so the tools that drive a node process
(``node_client.py``) can use :class:`ExitWatchdog` without loading ROS. The shutdown sequence
itself (README, "Transport") is :func:`metric_solver_ros.node.run`; this module holds its parts.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

#: Seconds between two log lines of the same kind of error.
ERROR_LOG_PERIOD_S = 5.0
#: After SIGINT/SIGTERM the process is gone within this long [s], whatever blocks.
SHUTDOWN_DEADLINE_S = 1.8

_DIGITS = re.compile(r'[-+]?\d[\d.e+-]*')


#: The parent of the package's Python loggers (the engine's ONNX export, backend and thread
#: choices log there).
PACKAGE_LOGGER = 'metric_solver_ros'


class StartupError(RuntimeError):
    """The node cannot start (bad checkpoint, device, parameters); the text says why."""


class LogForward(logging.Handler):
    """The package's Python log records, INFO and up, to ``write(level, text)``.

    Nothing else configures Python's logging in a node or a tool's process: without this, the
    engine's INFO lines (the ONNX export that makes a first frame take seconds, the backend and
    thread choices) are dropped and its warnings printed bare.

    Args:
        write: Called with the record's level (``logging.INFO`` ...) and its text.
    """

    def __init__(self, write: Callable[[int, str], None]) -> None:
        super().__init__(logging.INFO)
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record (a failing ``write`` is reported by ``logging``, not raised)."""
        try:
            self.write(record.levelno, self.format(record))
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def forward_package_logs(write: Callable[[int, str], None]) -> LogForward:
    """Send the package's log records (INFO and up) to ``write``; one forwarder per process.

    A second call points the existing forwarder at the new ``write`` (a process that creates
    several nodes logs through the latest). Records still propagate to the root logger (an
    application's own handlers see them too).
    """
    package = logging.getLogger(PACKAGE_LOGGER)
    forward = next((h for h in package.handlers if isinstance(h, LogForward)), None)
    if forward is None:
        forward = LogForward(write)
        package.addHandler(forward)
    forward.write = write
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    return forward


def print_log_writer(program: str) -> Callable[[int, str], None]:
    """A ``write`` for :func:`forward_package_logs`: ``program: [warning: ]text`` on stderr.

    ``sys.stderr`` is looked up at each line (tests swap it).
    """
    def write(level: int, text: str) -> None:
        kind = ('error: ' if level >= logging.ERROR
                else 'warning: ' if level >= logging.WARNING else '')
        print(f'{program}: {kind}{text}', file=sys.stderr, flush=True)

    return write


def ros_log_writer(logger: Any) -> Callable[[int, str], None]:
    """A ``write`` for :func:`forward_package_logs`: an rclpy logger at the record's level."""
    def write(level: int, text: str) -> None:
        if level >= logging.ERROR:
            logger.error(text)
        elif level >= logging.WARNING:
            logger.warning(text)
        else:
            logger.info(text)

    return write


class ThrottledLog:
    """Log each kind of problem at most once per period, counting what was held back.

    Args:
        logger: Anything with ``warning(text)`` and ``error(text)`` (an rclpy logger, or a
            ``logging.Logger``).
        period_s: Shortest time between two lines of one kind [s].
    """

    def __init__(self, logger: Any, period_s: float = ERROR_LOG_PERIOD_S) -> None:
        self._logger = logger
        self._period_s = period_s
        self._state: dict[str, list[float]] = {}  # key -> [last log time, suppressed count]
        self._lock = threading.Lock()

    def warn(self, key: str, text: str, level: str = 'warning') -> None:
        """Log ``text`` at ``level`` (warning or error) unless its kind was logged lately.

        The kind is ``key`` plus the text with its numbers blanked, so different problems
        (a short buffer, an unknown encoding) each get through, and a flood of one does not.
        """
        key = f'{key}:{_DIGITS.sub("#", text)}'
        now = time.monotonic()
        with self._lock:
            state = self._state.get(key)
            if state is not None and now - state[0] < self._period_s:
                state[1] += 1
                return
            suppressed = int(state[1]) if state else 0
            self._state[key] = [now, 0]
        if suppressed:
            text += f' ({suppressed} more like this in the last {self._period_s:g} s)'
        # One call site per severity: rclpy refuses a call site whose severity changes
        # ("Logger severity cannot be changed between calls").
        if level == 'error':
            self._logger.error(text)
        else:
            self._logger.warning(text)


def transport_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """Why large best-effort images may not arrive with this process environment, or None.

    rmw_fastrtps answers localhost-only discovery (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
    or ``ROS_LOCALHOST_ONLY=1``) by replacing the builtin transports with localhost UDP, which
    turns ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` off without a word: best-effort images (any
    640x480 frame is larger than a datagram) are then almost all lost.
    """
    env = os.environ if environ is None else environ
    localhost = (env.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() == 'LOCALHOST'
                 or env.get('ROS_LOCALHOST_ONLY', '') == '1')
    if localhost and env.get('FASTDDS_BUILTIN_TRANSPORTS', '').upper() == 'LARGE_DATA':
        return ('FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA has no effect with localhost-only '
                'discovery (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST / ROS_LOCALHOST_ONLY=1): '
                'large best-effort images will be lost. Isolate with ROS_DOMAIN_ID instead, '
                'or make the image subscription reliable (README, "Transport").')
    return None


class ExitWatchdog:
    """Ends the process if it has not exited ``deadline_s`` after SIGINT or SIGTERM.

    The Fast DDS of the PyPI wheels (3.2) can block forever while deleting a participant whose
    ``LARGE_DATA`` channel is mid-read (README, "Transport"); a node that then ignores SIGTERM
    stalls a launch file or a robot's shutdown. The watchdog does not rely on the main thread:
    Python's C-level signal handler writes each signal's number to a socket
    (``signal.set_wakeup_fd``) even while the main thread is blocked in C, and a daemon thread
    waiting on that socket starts the clock. If :meth:`done` has not been called by the
    deadline it logs why, dumps every thread's Python stack to stderr (``faulthandler``; what
    was stuck), and ends the process with ``os._exit(exit_code)``: the node's outputs stopped
    with the signal, only the DDS teardown is skipped.

    Create it in the main thread after the signal handlers are installed.

    Args:
        deadline_s: Seconds from the first SIGINT/SIGTERM to the forced exit.
        exit_code: Exit status of a forced exit.
        name: Prefix of the line it prints (``[name] shutdown did not finish ...``); none if
            empty.
    """

    MESSAGE = 'shutdown did not finish'

    def __init__(self, deadline_s: float = SHUTDOWN_DEADLINE_S, exit_code: int = 0,
                 name: str = '') -> None:
        import socket

        self.deadline_s = deadline_s
        self.exit_code = exit_code
        self.name = name
        self._finished = threading.Event()
        self._read, self._write = socket.socketpair()
        self._write.setblocking(False)
        signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name='exit_watchdog', daemon=True).start()

    def done(self) -> None:
        """The teardown finished: no forced exit."""
        self._finished.set()
        signal.set_wakeup_fd(-1)

    def _watch(self) -> None:
        import faulthandler

        while True:
            data = self._read.recv(64)
            if not data or {signal.SIGINT, signal.SIGTERM} & set(data):
                break
        if self._finished.wait(self.deadline_s):
            return
        prefix = f'[{self.name}] ' if self.name else ''
        print(f'{prefix}{self.MESSAGE} within {self.deadline_s:g} s of the signal; '
              'every thread\'s stack follows, then the process exits without the rest of the '
              'DDS teardown', file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(self.exit_code)


def terminate_event() -> threading.Event:
    """An event set by SIGTERM (Python handler: the main loop polls it between short spins).

    SIGINT stays rclpy's own (it shuts the context down).
    """
    terminate = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: terminate.set())
    return terminate


def mute_signals() -> None:
    """Make SIGINT and SIGTERM no-ops for the teardown, which is not interruptible.

    A second Ctrl-C (or launch's SIGINT after systemd's SIGTERM) raised KeyboardInterrupt in the
    worker join, skipped the rest, and the interpreter's own teardown then aborted inside torch
    (exit -6); :class:`ExitWatchdog` still bounds the time. A no-op handler, not SIG_IGN: an
    ignored signal never reaches the wakeup fd that starts the watchdog (a teardown without a
    signal, e.g. after a StartupError, could then hang in DDS with only SIGKILL left).
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)


def release_context() -> None:
    """Delete the default context's DDS participant now (and with it Fast DDS's /dev/shm files).

    Otherwise that happens in the interpreter's teardown, which :func:`end_process` skips.
    """
    import rclpy

    context = rclpy.utilities.get_default_context()
    destroy = getattr(context, 'destroy', None)  # Iron and later
    if destroy is not None:
        destroy()
        return
    handle = getattr(context, 'handle', None)  # Humble: the rcl context's pybind handle
    if handle is not None and hasattr(handle, 'destroy_when_not_in_use'):
        handle.destroy_when_not_in_use()


def end_process(code: int) -> NoReturn:
    """Flush the logs and end the process with ``code``, skipping the interpreter's teardown.

    That teardown costs ~0.5 s (mostly torch) and is fatal while a frame is still being
    computed (a slow model on the CPU): finalisation ends the worker thread inside torch and
    C++ aborts ("terminate called without an active exception", measured). Call it only once
    everything the process owns has been released.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
