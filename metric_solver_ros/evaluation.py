"""Offline evaluation: frames -> predictions -> metrics -> metrics.json, metrics.csv, report.md.

The pipeline has three replaceable parts:

* a **frame source**: :class:`BagFrames` (a rosbag, images paired with GT depth by header stamp,
  see :mod:`metric_solver_ros.bagio`) or :func:`sample_frames` (in-memory samples, e.g. synthetic
  scenes);
* a **predictor**: any callable ``EvalFrame -> {result name: Prediction}``. :class:`EnginePredictor`
  wraps the depth engine (one result per anchor, ``anchor=<a>``, plus ``fusion``);
  :func:`topic_predictor` returns a depth topic recorded in the bag (``pred_topic``), with no
  model at all;
* :func:`evaluate`, which scores every result at GT resolution with
  :class:`metric_solver_ros.metrics.MetricAggregator` (and, for consecutive frames, with
  :class:`metric_solver_ros.temporal_metrics.TemporalSeries`), and :func:`write_outputs`.

:class:`FilteredPredictor` runs each result of a predictor through its own
:class:`metric_solver_ros.temporal_filter.TemporalFilter`, in frame order.

Predictions whose resolution differs from the GT's are resized to it: depth bilinearly after the
clip of :func:`metric_solver_ros.metrics.clip_prediction` (+inf counts as the cap), NaN pixels
excluded from the interpolation weights and carried over by nearest-neighbour resizing, as is the
near mask.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from metric_solver_ros.anchor_metrics import AnchorConsistency, FarDecisions
from metric_solver_ros.metrics import (
    DEFAULT_CAP_M,
    DEFAULT_MIN_DEPTH_M,
    DEPTH_BANDS_M,
    MetricAggregator,
    clip_prediction,
)
from metric_solver_ros.temporal_metrics import TemporalSeries

#: Anchors evaluated when none are given [m].
DEFAULT_EVAL_ANCHORS_M: tuple[float, ...] = (2.0, 10.0, 40.0)
#: Result name of a depth topic read from the bag.
PRED_TOPIC_NAME = 'pred_topic'
#: Result name of multi-anchor fusion.
FUSION_NAME = 'fusion'
#: Result name of the automatic anchor selection (``anchor_modes``, ``auto``).
AUTO_NAME = 'auto'

def anchor_name(anchor_m: float) -> str:
    """Return the result name of an anchor, e.g. ``anchor=2``, ``anchor=0.5`` (``%g`` format)."""
    return f'anchor={float(anchor_m):g}'


class Prediction(NamedTuple):
    """One predicted depth map.

    Attributes:
        depth_m: float HxW depth [m] (+inf too far, NaN undefined), any resolution.
        near: Optional bool HxW near mask of an anchor result.
        anchor_m: Anchor [m] the mask refers to (None: the mask is not scored).
        decoded_m: Anchors [m] the depth was decoded at when they change from frame to frame
            (automatic selection); a temporal filter resets when they do. None: fixed.
    """

    depth_m: np.ndarray
    near: np.ndarray | None = None
    anchor_m: float | None = None
    decoded_m: tuple[float, ...] | None = None


@dataclass
class EvalFrame:
    """One evaluation frame.

    Attributes:
        index: Position in the evaluation (0-based).
        image: uint8 HxWx3 RGB image.
        gt_depth_m: float32 GT depth [m] (0 / NaN invalid, +inf sky), its own resolution.
        stamp_ns: Header stamp of the image [ns], None for in-memory samples.
        name: Human-readable frame name.
        pred_depth_m: Depth [m] from a prediction topic of the bag, if one was paired.
        pose_world_cam: 4x4 camera-to-world pose (from the bag's /tf), if known.
        intrinsics: ``(fx, fy, cx, cy)`` [px] at the image resolution, if known.
    """

    index: int
    image: np.ndarray
    gt_depth_m: np.ndarray
    stamp_ns: int | None = None
    name: str = ''
    pred_depth_m: np.ndarray | None = None
    pose_world_cam: np.ndarray | None = None
    intrinsics: tuple[float, float, float, float] | None = None


#: A predictor maps a frame to named predictions.
Predictor = Callable[[EvalFrame], Mapping[str, Prediction]]


class BagFrames:
    """Evaluation frames from a rosbag: images paired with GT depth (and a prediction topic).

    An image (``sensor_msgs/Image`` or ``CompressedImage``) becomes a frame when a GT depth
    message, and a prediction-topic message if one is named, lie within ``tolerance_ns`` of its
    header stamp (see :func:`metric_solver_ros.bagio.pair_by_stamp`). Images without partners are
    skipped and counted in :attr:`stats`. When the bag has ``/tf`` or ``/tf_static``, each
    frame gets the pose of the image's ``header.frame_id`` at its stamp
    (:class:`metric_solver_ros.bagtf.PoseLookup`, within ``tolerance_ns``); with ``info_topic``,
    the intrinsics of its first CameraInfo.

    Args:
        path: Bag directory, ``.mcap`` or ``.db3`` file.
        image_topic: Colour image topic.
        depth_topic: GT depth topic (``32FC1`` m or ``16UC1`` mm).
        pred_topic: Optional predicted depth topic (same encodings).
        tolerance_ns: Largest header-stamp difference of a pair [ns].
        max_frames: Keep the first frames only.
        info_topic: Optional CameraInfo topic of the image.
        poses: Read camera poses from the bag's tf topics.
    """

    def __init__(self, path: str | pathlib.Path, image_topic: str, depth_topic: str, *,
                 pred_topic: str | None = None, tolerance_ns: int = 20_000_000,
                 max_frames: int | None = None, info_topic: str | None = None,
                 poses: bool = True) -> None:
        from metric_solver_ros.bagio import SyncedReader, first_message
        from metric_solver_ros.bagtf import PoseLookup

        self.image_topic, self.depth_topic, self.pred_topic = image_topic, depth_topic, pred_topic
        others = [depth_topic] + ([pred_topic] if pred_topic else [])
        self.reader = SyncedReader(path, image_topic, others, tolerance_ns, max_frames)
        self.stats = self.reader.stats
        self.tolerance_ns = tolerance_ns
        self.poses = PoseLookup.from_bag(path) if poses else None
        self.intrinsics = None
        if info_topic:
            from metric_solver_ros.conversions import camera_info_to_intrinsics

            info = first_message(path, info_topic)
            self.intrinsics = None if info is None else camera_info_to_intrinsics(info)

    def __len__(self) -> int:
        return len(self.reader)

    def __iter__(self) -> Iterator[EvalFrame]:
        from metric_solver_ros.conversions import (
            compressed_to_rgb,
            depth_image_to_m,
            image_to_rgb,
        )

        for synced in self.reader:
            image_msg = synced.msgs[self.image_topic]
            is_compressed = hasattr(image_msg, 'format') and not hasattr(image_msg, 'encoding')
            image = compressed_to_rgb(image_msg) if is_compressed else image_to_rgb(image_msg)
            pred = (depth_image_to_m(synced.msgs[self.pred_topic]) if self.pred_topic else None)
            pose = None
            if self.poses is not None:
                found = self.poses.lookup(image_msg.header.frame_id, synced.stamp_ns,
                                          self.tolerance_ns)
                pose = None if found is None else found[1]
            yield EvalFrame(
                index=synced.index, image=image,
                gt_depth_m=depth_image_to_m(synced.msgs[self.depth_topic]),
                stamp_ns=synced.stamp_ns, name=str(synced.stamp_ns), pred_depth_m=pred,
                pose_world_cam=pose, intrinsics=self.intrinsics)


def sample_frames(samples: Iterable[Any]) -> Iterator[EvalFrame]:
    """Wrap Sample-like objects as frames.

    Samples have ``image`` and ``depth_m``, optionally ``name``, ``intrinsics`` and
    ``pose_world_cam``.
    """
    for index, sample in enumerate(samples):
        yield EvalFrame(index=index, image=np.asarray(sample.image),
                        gt_depth_m=np.asarray(sample.depth_m, dtype=np.float32),
                        name=str(getattr(sample, 'name', '') or index),
                        pose_world_cam=getattr(sample, 'pose_world_cam', None),
                        intrinsics=getattr(sample, 'intrinsics', None))


def topic_predictor(frame: EvalFrame) -> dict[str, Prediction]:
    """Predictor that returns the bag's prediction topic as result ``pred_topic``."""
    if frame.pred_depth_m is None:
        raise ValueError('frame has no prediction-topic depth (was --pred-topic given?)')
    return {PRED_TOPIC_NAME: Prediction(frame.pred_depth_m)}


class EnginePredictor:
    """Predictor backed by a ``DepthEngine`` (see ``metric_solver_ros.engine``).

    One encoder pass gives one result per anchor (``engine.infer_each``), named by
    :func:`anchor_name`, with its near mask scored against ``1[gt <= anchor]``. With ``fusion``,
    ``engine.redecode`` (re-using the cached encoder features) adds the multi-anchor fusion of
    all anchors as result ``fusion``. With ``auto``, result ``auto`` is the depth at the anchor
    an automatic selector (the node's ``auto`` mode) picked from the previous frames, also by
    re-decoding, with the node's scale handover at switches (``anchor_modes.ScaleHandover``);
    its switches are scored in :attr:`switches` (frames must come in order).

    Args:
        engine: A ``DepthEngine`` (``infer_each(image, anchors_m) -> list[DepthResult]``,
            ``redecode(anchors_m) -> DepthResult``; results have ``depth_m`` and ``near``).
        anchors_m: Anchors [m].
        fusion: Also evaluate the fusion of all anchors.
        auto: An ``anchor_modes.AnchorSelector`` in its initial state, or None.
    """

    def __init__(self, engine: Any, anchors_m: Sequence[float], fusion: bool = False,
                 auto: Any = None) -> None:
        from metric_solver_ros.anchor_metrics import AnchorSwitches
        from metric_solver_ros.anchor_modes import ScaleHandover

        if not anchors_m:
            raise ValueError('at least one anchor is needed')
        self.engine = engine
        self.anchors_m = tuple(float(a) for a in anchors_m)
        self.fusion = fusion
        self.auto = auto
        self.switches = AnchorSwitches()
        self.handover = ScaleHandover()

    def __call__(self, frame: EvalFrame) -> dict[str, Prediction]:
        """Return ``{anchor=<a>: Prediction}`` (and ``fusion``) for one frame."""
        results = self.engine.infer_each(frame.image, self.anchors_m)
        out = {anchor_name(anchor): Prediction(result.depth_m, result.near, anchor)
               for anchor, result in zip(self.anchors_m, results, strict=True)}
        if self.fusion:
            # The features of this frame are cached: fusion costs only a decoder call.
            out[FUSION_NAME] = Prediction(self.engine.redecode(self.anchors_m).depth_m)
        if self.auto is not None:
            anchor = self.auto.current_m
            raw = self.engine.redecode((anchor,)).depth_m
            previous = self.switches.anchors_m[-1] if self.switches.anchors_m else anchor
            before = None if previous == anchor else self.engine.redecode((previous,)).depth_m
            if before is not None:
                self.handover.start(before, raw)
            depth = self.handover.apply(raw)
            self.switches.add(anchor, depth, before, raw)
            self.auto.update(depth)
            out[AUTO_NAME] = Prediction(depth, decoded_m=(anchor,))
        return out


class FilteredPredictor:
    """A predictor whose every result goes through its own temporal filter, in frame order.

    Args:
        predictor: The predictor filtered.
        mode: ``'off'``, ``'scale'`` or ``'full'`` (see :mod:`metric_solver_ros.temporal_filter`).
        settings: Filter tuning (default: the filter's).
        motion_hint: Tell the filter how the camera moved since the previous frame, from the
            frames' poses (``pose_world_cam``; unknown where a pose is missing).
        still_camera: The camera is known still: with ``motion_hint``, frames without poses
            count as not moved (the user's ``--static-camera``).
    """

    def __init__(self, predictor: Predictor, mode: str, settings: Any = None, *,
                 motion_hint: bool = False, still_camera: bool = False) -> None:
        from metric_solver_ros.temporal_filter import MODES

        if mode not in MODES:
            raise ValueError(f'temporal filter mode must be one of {MODES}, got {mode!r}')
        self.predictor, self.mode, self.settings = predictor, mode, settings
        self.motion_hint, self.still_camera = motion_hint, still_camera
        self.filters: dict[str, Any] = {}
        self._pose: np.ndarray | None = None  # the previous frame's
        self.hinted_frames = 0  # frames whose camera motion the filters were told

    def _motion(self, frame: EvalFrame) -> Any:
        """The camera's motion since the previous frame, or None when unknown."""
        from metric_solver_ros.temporal_filter import CameraMotion

        previous, self._pose = self._pose, frame.pose_world_cam
        if not self.motion_hint:
            return None
        if previous is not None and frame.pose_world_cam is not None:
            return CameraMotion.between(previous, frame.pose_world_cam)
        return CameraMotion() if self.still_camera and frame.pose_world_cam is None else None

    def __call__(self, frame: EvalFrame) -> dict[str, Prediction]:
        """Return the predictor's results with filtered depth (masks unchanged)."""
        from metric_solver_ros.temporal_filter import TemporalFilter

        motion = self._motion(frame)
        self.hinted_frames += motion is not None
        out = {}
        for name, prediction in self.predictor(frame).items():
            prediction = Prediction(*prediction)
            flt = self.filters.get(name)
            if flt is None:
                flt = self.filters[name] = TemporalFilter(self.mode, self.settings)
            anchor = prediction.decoded_m if prediction.decoded_m else prediction.anchor_m
            out[name] = prediction._replace(depth_m=flt.apply(prediction.depth_m, anchor, motion))
        return out


def combine_predictors(*predictors: Predictor) -> Predictor:
    """Return a predictor that merges the results of several (later names win)."""
    def combined(frame: EvalFrame) -> dict[str, Prediction]:
        out: dict[str, Prediction] = {}
        for predictor in predictors:
            out.update(predictor(frame))
        return out

    return combined


def _resize(array: np.ndarray, shape: tuple[int, int], interpolation: int) -> np.ndarray:
    """Resize a 2-D array to ``shape`` (H, W) with OpenCV."""
    import cv2

    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def nearest_to_shape(depth_m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Depth at ``shape`` by nearest neighbour, keeping +inf and NaN (for far decisions)."""
    import cv2

    depth_m = np.asarray(depth_m, dtype=np.float32)
    return depth_m if depth_m.shape == tuple(shape) else _resize(depth_m, shape, cv2.INTER_NEAREST)


def to_gt_resolution(prediction: Prediction, shape: tuple[int, int], min_depth_m: float,
                     cap_m: float) -> Prediction:
    """Resize a prediction to the GT shape (see the module docstring); no-op if it matches.

    Args:
        prediction: The prediction.
        shape: GT ``(H, W)``.
        min_depth_m: Lower clip [m].
        cap_m: Upper clip [m].

    Returns:
        A prediction of shape ``shape``; resized depth is clipped, with NaN kept where the
        nearest source pixel was NaN.
    """
    import cv2

    depth = np.asarray(prediction.depth_m)
    near = prediction.near
    if depth.shape != tuple(shape):
        nan = np.isnan(depth)
        weight = (~nan).astype(np.float32)
        clipped = clip_prediction(depth, min_depth_m, cap_m).astype(np.float32) * weight
        # Normalised interpolation: NaN pixels lend no weight to their resized neighbours.
        numerator = _resize(clipped, shape, cv2.INTER_LINEAR)
        denominator = _resize(weight, shape, cv2.INTER_LINEAR)
        with np.errstate(invalid='ignore', divide='ignore'):
            depth = np.where(denominator > 1e-6, numerator / denominator, np.nan)
        depth = depth.astype(np.float32)
        depth[_resize(nan.astype(np.uint8), shape, cv2.INTER_NEAREST).astype(bool)] = np.nan
    if near is not None and np.shape(near) != tuple(shape):
        near = _resize(np.asarray(near, dtype=np.uint8), shape, cv2.INTER_NEAREST).astype(bool)
    return Prediction(depth, near, prediction.anchor_m)


@dataclass
class Example:
    """A frame kept for the report figure.

    Attributes:
        index: Frame index.
        name: Frame name.
        image: uint8 RGB image at GT resolution.
        gt_depth_m: GT depth [m].
        depth_m: ``{result name: prediction [m] at GT resolution}``.
    """

    index: int
    name: str
    image: np.ndarray
    gt_depth_m: np.ndarray
    depth_m: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Everything :func:`evaluate` measured.

    Attributes:
        results: ``{result name: aggregator}`` in first-seen order.
        frames: Number of frames evaluated.
        examples: Frames kept for the report.
        min_depth_m: Lower GT limit [m].
        cap_m: GT cap [m].
        consistency: Consistency across the anchor results (None with fewer than two).
        far: ``{result name: far (sky) decisions}``.
        temporal: ``{result name: temporal metrics}`` (empty unless asked for).
        extra: More sections of ``metrics.json`` (e.g. ``anchor_switches``).
    """

    results: dict[str, MetricAggregator]
    frames: int
    examples: list[Example]
    min_depth_m: float
    cap_m: float
    consistency: AnchorConsistency | None = None
    far: dict[str, FarDecisions] = field(default_factory=dict)
    temporal: dict[str, TemporalSeries] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the ``metrics.json`` content without ``config`` (see :func:`write_outputs`)."""
        data = {
            'frames': self.frames,
            'results': {n: a.frame_mean() for n, a in self.results.items()},
            'bands': {n: a.bands() for n, a in self.results.items()},
            'per_frame': {n: a.per_frame for n, a in self.results.items()},
            'pixel_mean': {n: a.pixel_mean() for n, a in self.results.items()},
            'mask_accuracy': {n: a.mask_accuracy() for n, a in self.results.items()
                              if a.anchor_m is not None},
            'protocol': {
                'min_depth_m': self.min_depth_m, 'cap_m': self.cap_m,
                'valid_gt': 'finite and min_depth < gt <= cap, at GT resolution',
                'prediction': 'clipped to [min_depth, cap]; +inf -> cap; NaN -> min_depth',
                'headline': 'results = mean over frames; pixel_mean = all valid pixels pooled',
                'bands_m': [[name, lo, None if math.isinf(hi) else hi]
                            for name, lo, hi in DEPTH_BANDS_M],
                'bands': 'pooled over pixels',
            },
            'far_decisions': {n: f.summary() for n, f in self.far.items()},
        }
        if self.consistency is not None and self.consistency.per_frame:
            data['anchor_consistency'] = self.consistency.summary()
        if self.temporal:
            data['temporal'] = {n: t.summary() for n, t in self.temporal.items()}
        data.update(self.extra)
        return data


def _example_indices(total: int | None, count: int) -> set[int]:
    """Return the frame indices kept as examples: evenly spread when ``total`` is known."""
    if count <= 0:
        return set()
    if not total:
        return set(range(count))
    return {int(round(i)) for i in np.linspace(0, total - 1, min(count, total))}


def evaluate(frames: Iterable[EvalFrame], predictor: Predictor, *,
             min_depth_m: float = DEFAULT_MIN_DEPTH_M, cap_m: float = DEFAULT_CAP_M,
             examples: int = 3, total: int | None = None,
             progress: bool | None = None, temporal: bool = False,
             static_camera: bool = False) -> EvalResult:
    """Run ``predictor`` on every frame and score each result against the GT.

    Args:
        frames: Frame source.
        predictor: ``EvalFrame -> {name: Prediction}``; every frame should give the same names.
        min_depth_m: Exclusive lower GT limit and lower prediction clip [m].
        cap_m: Inclusive GT cap and upper prediction clip [m].
        examples: Number of frames to keep for the report figure.
        total: Number of frames, if known (progress bar and example spread; default
            ``len(frames)`` when it has one).
        progress: Show a tqdm bar; None shows it only on a terminal.
        temporal: The frames are consecutive (a bag, a sequence): also score each result
            over time (:mod:`metric_solver_ros.temporal_metrics`).
        static_camera: The user states the camera is still (temporal metrics of frames
            without poses).

    Returns:
        The aggregated results.
    """
    from tqdm import tqdm

    if total is None and hasattr(frames, '__len__'):
        total = len(frames)  # type: ignore[arg-type]
    keep = _example_indices(total, examples)
    results: dict[str, MetricAggregator] = {}
    far: dict[str, FarDecisions] = {}
    series: dict[str, TemporalSeries] = {}
    consistency = AnchorConsistency(min_depth_m=min_depth_m, cap_m=cap_m)
    kept: list[Example] = []
    count = 0
    for frame in tqdm(frames, total=total, desc='eval', unit='frame',
                      disable=None if progress is None else not progress):
        gt = np.asarray(frame.gt_depth_m, dtype=np.float32)
        example = None
        if frame.index in keep:
            image = np.asarray(frame.image)
            if image.shape[:2] != gt.shape:
                import cv2

                image = cv2.resize(image, (gt.shape[1], gt.shape[0]),
                                   interpolation=cv2.INTER_AREA)
            example = Example(frame.index, frame.name, image, gt)
            kept.append(example)
        by_anchor: dict[float, np.ndarray] = {}
        intrinsics = _intrinsics_at(frame, gt.shape)
        for name, prediction in predictor(frame).items():
            prediction = Prediction(*prediction)
            far.setdefault(name, FarDecisions(min_depth_m=min_depth_m)).add(
                nearest_to_shape(prediction.depth_m, gt.shape), gt)
            prediction = to_gt_resolution(prediction, gt.shape, min_depth_m, cap_m)
            if prediction.anchor_m is not None:
                by_anchor[float(prediction.anchor_m)] = prediction.depth_m
            aggregator = results.get(name)
            if aggregator is None:
                aggregator = MetricAggregator(min_depth_m=min_depth_m, cap_m=cap_m,
                                              anchor_m=prediction.anchor_m)
                results[name] = aggregator
            record = aggregator.add(prediction.depth_m, gt, prediction.near)
            record.update(frame=frame.index, frame_name=frame.name, stamp_ns=frame.stamp_ns)
            if temporal:
                series.setdefault(name, TemporalSeries(
                    min_depth_m=min_depth_m, cap_m=cap_m, static_camera=static_camera)).add(
                    prediction.depth_m, gt, frame.pose_world_cam, intrinsics)
            if example is not None:
                example.depth_m[name] = prediction.depth_m
        if len(by_anchor) >= 2:
            consistency.add(by_anchor, gt)
        count += 1
    return EvalResult(results, count, kept, min_depth_m, cap_m, consistency, far, series)


def _intrinsics_at(frame: EvalFrame, shape: tuple[int, int]) -> tuple[float, ...] | None:
    """The frame's intrinsics at the GT resolution ``shape`` (H, W), or None."""
    if frame.intrinsics is None:
        return None
    from metric_solver_ros.conversions import scale_intrinsics

    height, width = np.asarray(frame.image).shape[:2]
    if (height, width) == tuple(shape):
        return tuple(float(v) for v in frame.intrinsics)
    return scale_intrinsics(frame.intrinsics, (width, height), (shape[1], shape[0]))
