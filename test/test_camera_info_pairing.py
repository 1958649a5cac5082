"""Pairing images with their camera_info (``CameraInfoPairing``) without DDS or a node.

The scenarios of the DDS tests at unit level: an image gets the info with its stamp, else the
latest; an image sent before its info (image_transport's order) gets its own once the stream has
shown that infos follow their images in time; unusable infos are refused with a reason.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from metric_solver_ros.camera_info_pairing import CAMERA_INFO_WAIT_S, CameraInfoPairing
from metric_solver_ros.conversions import camera_info_to_intrinsics
from metric_solver_ros.process_life import ThrottledLog

WIDTH, HEIGHT = 160, 120
NS = 1_000_000_000


class Clock:
    """A monotonic clock [s] that moves only when told."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def header(stamp_ns: int) -> Header:
    msg = Header(frame_id='camera_optical')
    msg.stamp.sec, msg.stamp.nanosec = divmod(stamp_ns, NS)
    return msg


def info(stamp_ns: int, fx: float = 150.0, width: int = WIDTH, height: int = HEIGHT,
         **fields) -> CameraInfo:
    msg = CameraInfo(header=header(stamp_ns), width=width, height=height, **fields)
    msg.k = [fx, 0.0, 79.5, 0.0, fx, 59.5, 0.0, 0.0, 1.0]
    return msg


@pytest.fixture
def log(caplog):
    caplog.set_level(logging.WARNING, logger='pairing_test')
    return ThrottledLog(logging.getLogger('pairing_test'), period_s=0.0)


class Waits:
    """The injected wait: records each call; may deliver an info, as the callback would."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[float] = []
        self.deliver = None  # (pairing, info) added during the next wait

    def __call__(self, predicate, timeout_s: float) -> bool:
        self.calls.append(timeout_s)
        if self.deliver is not None:
            pairing, late = self.deliver
            self.deliver = None
            self.clock.now_s += timeout_s / 2
            pairing.add(late)
        else:
            self.clock.now_s += timeout_s
        return predicate()


def make(log):
    clock = Clock()
    waits = Waits(clock)
    return CameraInfoPairing(log, clock=clock, wait=waits), clock, waits


def fx_of(paired) -> float:
    return paired.info.k[0]


def test_no_camera_info_yet_means_none_with_a_reason(log, caplog):
    pairing, _, waits = make(log)
    assert pairing.for_image(header(1 * NS), WIDTH, HEIGHT) is None
    assert 'no camera_info received yet' in caplog.text
    assert waits.calls == []


def test_the_info_with_the_images_stamp_else_the_latest(log):
    pairing, _, waits = make(log)
    for i, fx in enumerate((100.0, 200.0, 300.0), start=1):
        pairing.add(info(i * NS, fx))
    assert fx_of(pairing.for_image(header(2 * NS), WIDTH, HEIGHT)) == 200.0  # its own
    # older than the latest info and without its own: the latest, no waiting (none will follow)
    assert fx_of(pairing.for_image(header(2 * NS + 1), WIDTH, HEIGHT)) == 300.0
    # newer than every info, and nothing learned yet: the latest at once
    assert fx_of(pairing.for_image(header(9 * NS), WIDTH, HEIGHT)) == 300.0
    assert waits.calls == []


def test_an_image_before_its_info_waits_once_the_camera_showed_that_infos_follow(log):
    pairing, clock, waits = make(log)
    pairing.add(info(1 * NS))
    # image_transport's order: image, then its info a few ms later. The first images do not
    # wait (they get the previous info); each late info that would have been caught in time
    # raises the running share.
    scores = []
    for i in range(2, 5):
        paired = pairing.for_image(header(i * NS), WIDTH, HEIGHT)
        assert paired.info.header.stamp.sec == i - 1  # the previous frame's
        clock.now_s += 0.005
        pairing.add(info(i * NS))
        scores.append(pairing.score)
    assert waits.calls == []
    assert scores[0] < scores[1] < 0.5 <= scores[2]
    # Now a zoom: the image waits and gets its own info, not the previous focal length.
    waits.deliver = (pairing, info(5 * NS, fx=300.0))
    paired = pairing.for_image(header(5 * NS), WIDTH, HEIGHT)
    assert waits.calls == [CAMERA_INFO_WAIT_S]
    assert fx_of(paired) == 300.0 and paired.intrinsics[0] == 300.0
    assert pairing.score > scores[2]


def test_infos_that_come_too_late_or_never_stop_the_waiting(log):
    pairing, clock, waits = make(log)
    pairing.add(info(1 * NS))
    for i in range(2, 5):  # learn that infos follow their images in time
        pairing.for_image(header(i * NS), WIDTH, HEIGHT)
        pairing.add(info(i * NS))
    for i in range(5, 7):  # waits that catch the image's own info
        waits.deliver = (pairing, info(i * NS))
        assert pairing.for_image(header(i * NS), WIDTH, HEIGHT).info.header.stamp.sec == i
    assert len(waits.calls) == 2 and pairing.score > 0.75
    waits.calls.clear()
    # The camera stops sending infos with its images: two waits in vain, then none.
    for i in range(7, 11):
        assert pairing.for_image(header(i * NS), WIDTH, HEIGHT).info.header.stamp.sec == 6
    assert len(waits.calls) == 2 and pairing.score < 0.5
    # Not waiting, an image's info that comes after the deadline counts against waiting ...
    score = pairing.score
    pairing.for_image(header(20 * NS), WIDTH, HEIGHT)
    clock.now_s += 2 * CAMERA_INFO_WAIT_S
    pairing.add(info(20 * NS))
    assert pairing.score < score
    # ... and so does one that never comes, counted at the next image after its deadline.
    pairing.for_image(header(21 * NS), WIDTH, HEIGHT)
    score = pairing.score
    clock.now_s += 2 * CAMERA_INFO_WAIT_S
    assert pairing.for_image(header(20 * NS), WIDTH, HEIGHT).info.header.stamp.sec == 20
    assert pairing.score < score
    assert len(waits.calls) == 2


def test_the_default_wait_releases_the_lock_for_the_callback(log):
    # Real threads and clock: the info callback runs while the worker waits (a generous
    # wait_s, so a loaded machine cannot make it flaky; it returns as soon as the info is in).
    pairing = CameraInfoPairing(log, wait_s=5.0)
    pairing.add(info(1 * NS))
    pairing.score = 1.0  # as learned from a camera whose info follows its image
    sender = threading.Timer(0.05, pairing.add, args=(info(2 * NS, fx=250.0),))
    start = time.monotonic()
    sender.start()
    try:
        paired = pairing.for_image(header(2 * NS), WIDTH, HEIGHT)
    finally:
        sender.join()
    assert fx_of(paired) == 250.0
    assert time.monotonic() - start < 4.0


def test_binning_and_roi_give_the_intrinsics_of_the_image(log):
    pairing, _, _ = make(log)
    # REP 104: width/height/k are the full sensor's; the image is the roi, binned
    binned = info(1 * NS, fx=300.0, width=2 * WIDTH, height=2 * HEIGHT, binning_x=2, binning_y=2)
    binned.k = [300.0, 0.0, 159.5, 0.0, 300.0, 119.5, 0.0, 0.0, 1.0]
    pairing.add(binned)
    paired = pairing.for_image(header(1 * NS), WIDTH, HEIGHT)
    assert paired.info is binned
    assert paired.intrinsics == (150.0, 150.0, 79.75, 59.75)
    assert paired.intrinsics == camera_info_to_intrinsics(binned)
    cropped = info(2 * NS, width=640, height=480)
    cropped.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    cropped.roi.x_offset, cropped.roi.y_offset = 100, 40
    cropped.roi.width, cropped.roi.height = WIDTH, HEIGHT
    pairing.add(cropped)
    assert pairing.for_image(header(2 * NS), WIDTH, HEIGHT).intrinsics == (
        500.0, 500.0, 220.0, 200.0)


def test_an_info_without_a_size_fits_any_image(log):
    pairing, _, _ = make(log)
    pairing.add(info(1 * NS, width=0, height=0))
    assert pairing.for_image(header(1 * NS), 640, 480) is not None


@pytest.mark.parametrize('bad, reason', [
    (dict(k=[0.0] * 9), 'ignoring camera_info: camera_info focal lengths must be > 0'),
    (dict(k=[float('nan')] + [0.0] * 8), 'not finite'),
    (dict(width=640, height=480), 'ignoring camera_info for a 640x480 image: the image is '
                                  f'{WIDTH}x{HEIGHT}'),
])
def test_unusable_infos_are_refused_with_a_reason(log, caplog, bad, reason):
    pairing, _, _ = make(log)
    msg = info(1 * NS, **{k: v for k, v in bad.items() if k != 'k'})
    if 'k' in bad:
        msg.k = bad['k']
    pairing.add(msg)
    assert pairing.for_image(header(1 * NS), WIDTH, HEIGHT) is None
    assert reason in caplog.text
