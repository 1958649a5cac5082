"""Shared pytest set-up: an isolated DDS world per test session, and an rclpy fixture.

Tests talk over real DDS. Every pytest session picks its own ROS domain (so parallel runs on one
machine do not hear each other) and uses Fast DDS's LARGE_DATA transport, without which large
best-effort images are lost (see README, "Transport"). Discovery is deliberately NOT limited to
localhost: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` makes rmw_fastrtps replace the builtin
transports by localhost UDP, which silently turns LARGE_DATA off (measured: 0 of 40 640x480
best-effort images arrived, 40 of 40 without it).
Environment variables are set before rclpy loads, and node processes started by tests inherit
them.
"""

from __future__ import annotations

import faulthandler
import os
import random

if 'ROS_DOMAIN_ID' not in os.environ or os.environ.get('METRIC_SOLVER_TEST_DOMAIN') == 'random':
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
# Keep torch to the machine's cores without oversubscription in node subprocesses.
os.environ.setdefault('OMP_NUM_THREADS', str(os.cpu_count() or 1))

import pytest  # noqa: E402

#: A test still running after this long has hung [s]: dump every thread's stack and exit, so CI
#: fails with a trace instead of at its time limit. faulthandler's watchdog is a C thread, so it
#: fires even when a deadlock holds the GIL (see ``rclpy_context``).
HANG_S = 300


@pytest.fixture(autouse=True)
def hang_watchdog():
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope='session')
def rclpy_context():
    """Initialise rclpy once per test session (Humble-safe: no context manager)."""
    import rclpy

    rclpy.init()
    # rmw_fastrtps has one DDS participant per context and deletes it with the context's last
    # node. Deleting a participant whose LARGE_DATA (TCP) channel is mid-read from a live peer
    # deadlocks in the Fast DDS of the wheels (TCPChannelResourceBasic::disconnect; fixed
    # upstream in eProsima/Fast-DDS#6066): seen twice when a test destroyed its only node while
    # a node process was still publishing. This node keeps the participant alive all session.
    keep_alive = rclpy.create_node('pytest_participant_keep_alive')
    try:
        yield
    finally:
        keep_alive.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
