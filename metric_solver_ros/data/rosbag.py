"""A robot's own bag as training data: camera images with metric GT from an RGB-D or a LiDAR.

``BagRGBD`` is a sample source (``len``, ``[i] -> Sample``) like ``RGBDFolder``; the training
pipeline's source table names it ``rosbag`` (``{source: rosbag, path, image_topic,
camera_info_topic, depth_topic | lidar_topic, ...}``, ``train_data``), and ``metric-solver
finetune`` builds it for the train and holdout parts of a bag. The ground truth is either

- a **depth image** registered to the colour image (``16UC1`` mm or ``32FC1`` m; 0, NaN and
  -inf invalid, +inf too far: REP 117/118), or
- a **LiDAR** ``PointCloud2`` moved into the image's frame through the bag's ``/tf_static``
  (and ``/tf`` at the cloud's stamp when the chain moves) and projected with the camera_info
  (``lidar``): sparse depth, NaN where no point landed.

Each is paired with the image (raw or compressed) by header stamp within ``tolerance_ms``; the
camera_info is the one with the image's stamp, else the nearest. **Split by time**: the paired
frames' stamps span ``[t0, t1]``; the last ``holdout_fraction`` of that span is the holdout
(``stamp >= t0 + (1 - F)(t1 - t0)``), the rest is train, so held-out frames are never trained
on. Frames are decoded once, at construction, and kept in memory; with ``short_side_px`` they
are brought to the training resolution first (the LiDAR projected at it, so no point is lost
to resampling), which is also what keeps memory small (~0.4 MB a frame at 196 x 261 px).

Sanity checks (:class:`GroundTruthError`, a ValueError: ``metric-solver`` exits 2) run before
anything is trained: no pairs within the tolerance (with the nearest stamps' distance); GT depth
off by 1000x (millimetres as metres or the reverse); no transform chain between the LiDAR's and
the camera's frames (both named, with the tree the bag has); far fewer LiDAR points in the image
than the camera's field of view allows (wrong extrinsics or frame; a warning with the figures
when merely low).
"""

from __future__ import annotations

import bisect
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metric_solver_ros.data.sample import Sample

SPLITS = ('train', 'holdout', 'all')
#: Default pairing tolerance [ms] of a depth image (a camera's aligned depth shares the stamp).
DEPTH_TOLERANCE_MS = 20.0
#: Default pairing tolerance [ms] of a LiDAR scan (10 Hz scans are 100 ms apart).
LIDAR_TOLERANCE_MS = 50.0
#: Plausible median GT depth [m]; outside, the GT is taken to be off by 1000x (mm vs m).
PLAUSIBLE_MEDIAN_DEPTH_M = (0.02, 300.0)
#: In-image LiDAR points / what the field of view allows (``lidar.coverage_fraction``): below
#: the first, an error (wrong extrinsics or frame); below the second, a warning.
LIDAR_COVERAGE_ERROR_RATIO = 0.25
LIDAR_COVERAGE_WARNING_RATIO = 0.5
#: The LiDAR check runs after this many frames (fail fast) and again on all of them.
EARLY_CHECK_FRAMES = 5


class GroundTruthError(ValueError):
    """The bag's ground truth cannot be trained on; the message says what is wrong and why."""


@dataclass
class GroundTruthStats:
    """What the loaded frames' GT looked like (the sanity checks' figures).

    Attributes:
        frames: Frames loaded.
        median_depth_m: Median over frames of each frame's median valid GT depth [m].
        lidar_points: LiDAR points read (finite).
        lidar_in_image: Of those, points that landed in the image.
        lidar_allowed: Points the camera's field of view allows (``coverage_fraction`` x points).
        warnings: Warnings raised (also printed to stderr).
        frame_medians_m: Each frame's median valid GT depth (LiDAR: range) [m].
    """

    frames: int = 0
    median_depth_m: float | None = None
    lidar_points: int = 0
    lidar_in_image: int = 0
    lidar_allowed: float = 0.0
    warnings: list[str] = field(default_factory=list)
    frame_medians_m: list[float] = field(default_factory=list, repr=False)


def split_stamps(stamps_ns: list[int], holdout_fraction: float) -> int:
    """The first holdout stamp bound: frames with ``stamp >= bound`` are held out [ns].

    The last ``holdout_fraction`` of the time the stamps span; with ``holdout_fraction`` 0
    nothing is held out.
    """
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f'holdout fraction must be in [0, 1), got {holdout_fraction}')
    if not stamps_ns:
        return 0
    first, last = min(stamps_ns), max(stamps_ns)
    if holdout_fraction == 0.0:
        return last + 1
    return first + int(np.ceil((1.0 - holdout_fraction) * (last - first)))


def _image_rgb(msg: Any) -> np.ndarray:
    """RGB of an Image or CompressedImage message."""
    from metric_solver_ros.conversions import compressed_to_rgb, image_to_rgb

    is_compressed = hasattr(msg, 'format') and not hasattr(msg, 'encoding')
    return compressed_to_rgb(msg) if is_compressed else image_to_rgb(msg)


class BagRGBD:
    """Frames of a bag with metric ground truth (module docstring), as ``Sample``s.

    Args:
        path: Bag directory, ``.mcap`` or ``.db3`` file.
        image_topic: ``sensor_msgs/Image`` or ``CompressedImage`` topic.
        camera_info_topic: The image's ``CameraInfo`` topic.
        depth_topic: Registered depth image topic (exclusive with ``lidar_topic``).
        lidar_topic: ``PointCloud2`` topic (exclusive with ``depth_topic``).
        split: ``'train'``, ``'holdout'`` or ``'all'``.
        holdout_fraction: Last share of the bag's time held out, in [0, 1).
        tolerance_ms: Largest image-GT stamp difference [ms] (default ``DEPTH_TOLERANCE_MS``
            or ``LIDAR_TOLERANCE_MS``).
        short_side_px: Bring each frame's shorter side to this [px] (the training images'
            shorter side); None keeps the recorded resolution (evaluation).
        stride: Keep every ``stride``-th frame of the split (robot bags repeat themselves).
        max_frames: Keep at most this many frames of the split (after the stride).
        scene: ``Sample.scene`` of the frames (``'indoor'``, ``'outdoor'`` or ``''``).
        quiet: Do not print warnings (they are still in ``stats.warnings``).

    Raises:
        FileNotFoundError: No bag at ``path``.
        ValueError: Bad options, a topic missing or of the wrong type, a malformed message.
        GroundTruthError: A sanity check failed (module docstring).
        metric_solver_ros.bagtf.TransformError: No transform chain LiDAR -> camera.
    """

    def __init__(self, path: str | pathlib.Path, image_topic: str, camera_info_topic: str,
                 depth_topic: str | None = None, lidar_topic: str | None = None, *,
                 split: str = 'all', holdout_fraction: float = 0.2,
                 tolerance_ms: float | None = None, short_side_px: int | None = None,
                 stride: int = 1, max_frames: int | None = None, scene: str = '',
                 quiet: bool = False) -> None:
        from metric_solver_ros.bagio import (
            CAMERA_INFO,
            COMPRESSED_IMAGE,
            IMAGE,
            POINT_CLOUD2,
            check_topics,
        )

        if (depth_topic is None) == (lidar_topic is None):
            raise ValueError('give exactly one ground truth: a depth topic or a LiDAR topic')
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        if stride < 1 or (max_frames is not None and max_frames < 1):
            raise ValueError(f'need stride >= 1 and max_frames >= 1, got {stride}, {max_frames}')
        if short_side_px is not None and short_side_px < 1:
            raise ValueError(f'short side must be >= 1 px, got {short_side_px}')
        self.path = pathlib.Path(path)
        self.image_topic, self.camera_info_topic = image_topic, camera_info_topic
        self.depth_topic, self.lidar_topic = depth_topic, lidar_topic
        self.gt_topic: str = depth_topic or lidar_topic  # type: ignore[assignment]
        self.split, self.scene, self.quiet = split, scene, quiet
        self.short_side_px = short_side_px
        default_ms = DEPTH_TOLERANCE_MS if depth_topic else LIDAR_TOLERANCE_MS
        self.tolerance_ms = float(default_ms if tolerance_ms is None else tolerance_ms)
        if self.tolerance_ms < 0:
            raise ValueError(f'tolerance must be >= 0 ms, got {self.tolerance_ms}')
        check_topics(self.path, {
            '--image-topic': (image_topic, (IMAGE, COMPRESSED_IMAGE)),
            '--camera-info-topic': (camera_info_topic, (CAMERA_INFO,)),
            '--depth-topic': (depth_topic, (IMAGE,)),
            '--lidar-topic': (lidar_topic, (POINT_CLOUD2,))})
        self.stats = GroundTruthStats()
        self.samples: list[Sample] = []
        self.split_counts = {'train': 0, 'holdout': 0}
        self._frames = ('', '')  # (camera frame, LiDAR frame) of the last cloud
        self._load(split, holdout_fraction, stride, max_frames)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    # ---------------------------------------------------------------------------------- loading

    def _load(self, split: str, holdout_fraction: float, stride: int,
              max_frames: int | None) -> None:
        from metric_solver_ros.bagio import SyncedReader

        reader = SyncedReader(self.path, self.image_topic, [self.gt_topic],
                              round(self.tolerance_ms * 1e6))
        if len(reader) == 0:
            raise GroundTruthError(self._no_pairs_message(reader.stats.messages))
        stamps = reader.stamps_ns
        bound = split_stamps(stamps, holdout_fraction)
        self.split_counts = {'train': sum(s < bound for s in stamps),
                             'holdout': sum(s >= bound for s in stamps)}
        wanted = [i for i, s in enumerate(stamps)
                  if split == 'all' or (s >= bound) == (split == 'holdout')][::stride]
        wanted = set(wanted[:max_frames])
        if not wanted:
            return
        infos = self._camera_infos()
        tree = None
        if self.lidar_topic:
            from metric_solver_ros.bagtf import PoseLookup

            tree = PoseLookup.from_bag(self.path) or PoseLookup([])  # none: no chain, said so
        for frame in reader:
            if frame.index not in wanted:
                continue
            self.samples.append(self._sample(frame, infos, tree))
            if len(self.samples) == EARLY_CHECK_FRAMES:
                self._check(final=False)
            if len(self.samples) == len(wanted):
                break
        self._check(final=True)

    def _no_pairs_message(self, messages: dict[str, int]) -> str:
        """Why no image has a GT partner: counts, and how far apart the nearest stamps are."""
        from metric_solver_ros.bagio import read_header_stamps

        stamps = read_header_stamps(self.path, [self.image_topic, self.gt_topic])
        images, truths = stamps[self.image_topic], stamps[self.gt_topic]
        counts = ', '.join(f'{t}: {n}' for t, n in messages.items())
        if not images or not truths:
            return f'no image of {self.path} can have ground truth: messages {counts}'
        nearest = min(abs(t - images[min(max(bisect.bisect_left(images, t) - d, 0),
                                         len(images) - 1)])
                      for t in truths for d in (0, 1))
        return (f'no image on {self.image_topic} has a {self.gt_topic} message within '
                f'{self.tolerance_ms:g} ms (messages: {counts}); the nearest are '
                f'{nearest / 1e6:.1f} ms apart: check the topics, the clocks, or raise the '
                f'tolerance (--tolerance-ms)')

    def _camera_infos(self) -> list[tuple[int, Any]]:
        """Every CameraInfo of the bag as ``(stamp_ns, msg)``, sorted by stamp."""
        from metric_solver_ros.bagio import header_stamp_ns, read_topics

        infos = sorted(((header_stamp_ns(msg) or log_ns, msg) for _, log_ns, msg
                        in read_topics(self.path, [self.camera_info_topic])),
                       key=lambda item: item[0])
        if not infos:
            raise ValueError(f'--camera-info-topic {self.camera_info_topic} has no messages '
                             f'in {self.path}: the intrinsics are needed')
        return infos

    @staticmethod
    def _info_for(infos: list[tuple[int, Any]], stamp_ns: int) -> Any:
        """The CameraInfo stamped like the image, else the nearest in time."""
        stamps = [s for s, _ in infos]
        k = bisect.bisect_left(stamps, stamp_ns)
        near = [j for j in (k - 1, k) if 0 <= j < len(infos)]
        return infos[min(near, key=lambda j: abs(stamps[j] - stamp_ns))][1]

    def _sample(self, frame: Any, infos: list[tuple[int, Any]], tree: Any) -> Sample:
        """Decode one paired frame into a ``Sample`` (at ``short_side_px`` if set)."""
        from metric_solver_ros.data.augment import resize
        from metric_solver_ros.lidar import CameraModel

        image_msg = frame.msgs[self.image_topic]
        rgb = np.array(_image_rgb(image_msg))  # a copy: rgb8 is a read-only view of the message
        height, width = rgb.shape[:2]
        camera = CameraModel.from_camera_info(self._info_for(infos, frame.stamp_ns))
        if (camera.width, camera.height) != (width, height) and camera.width and camera.height:
            raise ValueError(f'{self.camera_info_topic} describes {camera.width}x{camera.height}'
                             f' images, {self.image_topic} has {width}x{height} (binning and '
                             'ROI applied): they are not the same camera stream')
        camera = CameraModel(camera.intrinsics, width, height, camera.distortion)
        size = (height, width)
        if self.short_side_px is not None:
            factor = self.short_side_px / min(height, width)
            size = (max(1, round(height * factor)), max(1, round(width * factor)))
        name = f'{frame.stamp_ns}'
        gt_msg = frame.msgs[self.gt_topic]
        if self.depth_topic:
            depth = self._depth(gt_msg, (height, width))
            sample = Sample(rgb, depth, camera.intrinsics, name=name, scene=self.scene)
            return sample if size == (height, width) else resize(sample, *size)
        blank = np.full((height, width), np.nan, np.float32)
        sample = Sample(rgb, blank, camera.intrinsics, name=name, scene=self.scene)
        if size != (height, width):
            sample = resize(sample, *size)
        target = CameraModel(sample.intrinsics, size[1], size[0],  # type: ignore[arg-type]
                             camera.distortion)
        sample.depth_m = self._lidar_depth(gt_msg, image_msg, camera, target, tree)
        return sample

    def _depth(self, msg: Any, shape: tuple[int, int]) -> np.ndarray:
        """A registered depth image in metres; NaN where invalid (0, NaN, -inf)."""
        from metric_solver_ros.conversions import depth_image_to_m

        depth = depth_image_to_m(msg)
        if depth.shape != shape:
            raise ValueError(f'{self.depth_topic} is {depth.shape[1]}x{depth.shape[0]}, the '
                             f'image {shape[1]}x{shape[0]}: the depth must be registered to the '
                             'colour image (e.g. a RealSense aligned_depth_to_color topic)')
        depth[(depth <= 0) | (depth == -np.inf)] = np.nan  # REP 118 0 and REP 117 -inf: none
        valid = np.isfinite(depth)
        if valid.any():
            self.stats.frame_medians_m.append(float(np.median(depth[valid])))
        return depth

    def _lidar_depth(self, cloud_msg: Any, image_msg: Any, camera: Any, target: Any,
                     tree: Any) -> np.ndarray:
        """The cloud projected into the image (at ``target``'s resolution); stats updated."""
        from metric_solver_ros.bagio import header_stamp_ns
        from metric_solver_ros.lidar import (
            cloud_to_xyz,
            coverage_fraction,
            project_to_depth,
            transform_points,
        )

        camera_frame = str(image_msg.header.frame_id).lstrip('/')
        lidar_frame = str(cloud_msg.header.frame_id).lstrip('/')
        if not camera_frame or not lidar_frame:
            raise GroundTruthError(
                f'the image frame is {camera_frame!r} and the LiDAR frame {lidar_frame!r}: both '
                'messages need a header.frame_id to find the transform between them')
        xyz = cloud_to_xyz(cloud_msg)
        camera_lidar = tree.transform(camera_frame, lidar_frame, header_stamp_ns(cloud_msg))
        points = transform_points(camera_lidar, xyz.astype(np.float64))
        full = project_to_depth(points, camera)  # the check counts at the recorded resolution
        projection = full if target == camera else project_to_depth(points, target)
        stats = self.stats
        stats.lidar_points += full.points
        stats.lidar_in_image += full.in_image
        stats.lidar_allowed += coverage_fraction(xyz, camera.fov_rad()) * full.points
        self._frames = (camera_frame, lidar_frame)
        if xyz.shape[0]:
            stats.frame_medians_m.append(float(np.median(np.linalg.norm(xyz, axis=1))))
        return projection.depth_m

    # ----------------------------------------------------------------------------------- checks

    def _warn(self, text: str) -> None:
        self.stats.warnings.append(text)
        if not self.quiet:
            print(f'warning: {text}', file=sys.stderr, flush=True)

    def _check(self, final: bool) -> None:
        """The sanity checks on the frames loaded so far (module docstring)."""
        stats = self.stats
        stats.frames = len(self.samples)
        if stats.frame_medians_m:
            stats.median_depth_m = float(np.median(stats.frame_medians_m))
            lo, hi = PLAUSIBLE_MEDIAN_DEPTH_M
            what = 'LiDAR range' if self.lidar_topic else 'GT depth'
            if stats.median_depth_m > hi:
                raise GroundTruthError(
                    f'{self.gt_topic}: the median {what} is {stats.median_depth_m:g} m, 1000x '
                    f'what a camera sees: millimetres stored as metres (a 32FC1 depth must be '
                    f'metres, 16UC1 millimetres; a PointCloud2 metres)')
            if stats.median_depth_m < lo:
                raise GroundTruthError(
                    f'{self.gt_topic}: the median {what} is {stats.median_depth_m:g} m, 1/1000 '
                    f'of a plausible depth: metres stored as millimetres (16UC1 depth must be '
                    f'millimetres)')
        elif final and stats.frames:
            raise GroundTruthError(f'{self.gt_topic}: no valid ground truth in {stats.frames} '
                                   'frames (all 0 / NaN, or empty clouds)')
        if self.lidar_topic and stats.lidar_points:
            self._check_lidar(final)

    def _check_lidar(self, final: bool) -> None:
        """Enough LiDAR points in the image for the camera's field of view?"""
        stats = self.stats
        camera_frame, lidar_frame = self._frames
        observed = stats.lidar_in_image / stats.lidar_points
        allowed = stats.lidar_allowed / stats.lidar_points
        ratio = observed / allowed if allowed > 0 else 0.0
        figures = (f'{100 * observed:.2f} % of the {stats.lidar_points} points of '
                   f'{self.lidar_topic} (frame {lidar_frame!r}) land in the image of '
                   f'{self.image_topic} (frame {camera_frame!r}) over {stats.frames} frames, '
                   f'where its field of view allows about {100 * allowed:.1f} %')
        if stats.lidar_in_image == 0 or ratio < LIDAR_COVERAGE_ERROR_RATIO:
            raise GroundTruthError(
                f'{figures}: likely wrong extrinsics or a wrong frame between {lidar_frame!r} '
                f'and {camera_frame!r} (is {camera_frame!r} the optical frame, z forward, of '
                'the image? is the LiDAR transform in /tf_static right?)')
        if final and ratio < LIDAR_COVERAGE_WARNING_RATIO:
            self._warn(f'{figures}: fewer than expected; check the extrinsics between '
                       f'{lidar_frame!r} and {camera_frame!r}')
