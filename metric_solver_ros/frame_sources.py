"""Unlabelled RGB frames for distillation: an image folder, a video file or a bag's image topic.

Each source yields ``(name, rgb)`` with ``rgb`` uint8 [H, W, 3] RGB, in a fixed order (sorted
file names, video frame order, bag log-time order), every ``every``-th frame, at most
``max_frames`` of them.
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from metric_solver_ros.data.rgbd_folder import RGB_EXTS, read_rgb

SOURCE_KINDS = ('images', 'video', 'bag')


@dataclass(frozen=True)
class FrameSource:
    """Where the frames come from.

    Attributes:
        kind: ``images`` (a folder, searched recursively), ``video`` (any file OpenCV's
            ``VideoCapture`` opens) or ``bag`` (rosbag2 directory, ``.mcap`` or ``.db3``).
        path: The folder, video or bag.
        image_topic: The bag's ``sensor_msgs/Image`` or ``CompressedImage`` topic.
        every: Keep every ``every``-th frame (1: all).
        max_frames: Keep at most this many (None: all).
    """

    kind: str
    path: pathlib.Path
    image_topic: str | None = None
    every: int = 1
    max_frames: int | None = None

    def __post_init__(self) -> None:
        """Reject an unknown kind, a bag without topic and counts below 1."""
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f'frame source kind {self.kind!r} is not one of {SOURCE_KINDS}')
        if self.kind == 'bag' and not self.image_topic:
            raise ValueError('--bag needs --image-topic')
        if self.every < 1 or (self.max_frames is not None and self.max_frames < 1):
            raise ValueError(f'--every and --max-frames must be >= 1, got {self.every} and '
                             f'{self.max_frames}')

    def describe(self) -> str:
        """A one-line record, e.g. ``bag:/data/run1 /camera/image_raw every 5``."""
        text = f'{self.kind}:{self.path}' + (f' {self.image_topic}' if self.image_topic else '')
        text += f' every {self.every}' if self.every > 1 else ''
        return text + (f' max {self.max_frames}' if self.max_frames else '')

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, rgb)`` of the kept frames.

        Raises:
            FileNotFoundError: No such folder, video or bag.
            ValueError: An empty folder, an unreadable video, a topic not in the bag.
        """
        if self.kind == 'images':
            source = _images(self.path)
        elif self.kind == 'video':
            source = _video(self.path, self.every)
        else:
            source = _bag(self.path, str(self.image_topic))
        step = 1 if self.kind == 'video' else self.every  # the video skips by itself
        return itertools.islice(source, 0, self.max_frames * step if self.max_frames else None,
                                step)


def image_files(root: pathlib.Path) -> list[pathlib.Path]:
    """The image files under ``root`` (``.png``, ``.jpg``, ``.jpeg``; any case), sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f'--images {root}: no such folder')
    files = sorted(p for p in root.rglob('*') if p.is_file() and p.suffix.lower() in RGB_EXTS)
    if not files:
        raise ValueError(f'--images {root}: no {", ".join(RGB_EXTS)} files')
    return files


def _images(root: pathlib.Path) -> Iterator[tuple[str, np.ndarray]]:
    for path in image_files(root):
        yield str(path.relative_to(root)), read_rgb(path)


def _video(path: pathlib.Path, every: int) -> Iterator[tuple[str, np.ndarray]]:
    import cv2

    if not path.is_file():
        raise FileNotFoundError(f'--video {path}: no such file')
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f'--video {path}: OpenCV cannot open it')
    try:
        index = 0
        while True:
            if index % every:  # grab() skips without decoding
                if not capture.grab():
                    return
            else:
                ok, bgr = capture.read()
                if not ok:
                    return
                yield f'frame{index:07d}', cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def _bag(path: pathlib.Path, topic: str) -> Iterator[tuple[str, np.ndarray]]:
    from metric_solver_ros.bagio import (
        COMPRESSED_IMAGE,
        IMAGE,
        check_topics,
        header_stamp_ns,
        read_topics,
    )
    from metric_solver_ros.conversions import compressed_to_rgb, image_to_rgb

    kind = check_topics(path, {'--image-topic': (topic, (IMAGE, COMPRESSED_IMAGE))})[topic]
    convert = compressed_to_rgb if kind == COMPRESSED_IMAGE else image_to_rgb
    for _, _, msg in read_topics(path, [topic]):
        yield str(header_stamp_ns(msg)), convert(msg)
