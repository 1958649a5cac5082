"""Metric teachers: ``KIND:PATH_OR_NAME[:MAX_DEPTH]``, their files and their depth.

A teacher is a metric depth model that labels images for ``metric-solver distill`` and is the
side-by-side row of ``metric-solver eval --baseline``. Kinds (:data:`TEACHER_KINDS`):

- ``dav2-metric``: a Depth Anything V2 metric file (``checkpoint.load_depth_anything_v2``),
  given by path or by registry name, e.g. ``depth_anything_v2_metric_hypersim_vits``, found in
  the weights cache (``metric-solver weights get NAME`` puts it there: nothing is downloaded
  here). Its depth is ``max_depth * sigmoid(head)``: the registry's ``max_depth_m`` for a
  registered file, else the one given (``:MAX_DEPTH``, ``--teacher-max-depth``).
- ``metric-solver``: one of our checkpoints (``default``: the bundled model); its depth is the
  multi-anchor fusion over its pool (:func:`spread_anchors`), +inf where it sees "too far".

A DA-V2 metric teacher saturates at its maximum: depths of at least :data:`CAP_FRACTION` of it
mean "this far or farther", not a measurement (:attr:`TeacherFile.label_cap_m`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TEACHER_KINDS = ('dav2-metric', 'metric-solver')
"""The ``KIND`` of ``--teacher KIND:PATH_OR_NAME`` / ``--baseline``."""
DAV2_INPUT_PX = 518
"""Shorter side of a Depth Anything V2 teacher's network input [px] (DA-V2's ``infer_image``)."""
CAP_FRACTION = 0.95
"""A DA-V2 teacher's depth at or above this fraction of its maximum is a lower bound.

``max_depth * sigmoid(x)`` approaches its maximum only asymptotically, so a surface beyond the
range reads somewhat below it; the top 5 % are too close to the cap to tell apart.
"""


@dataclass(frozen=True)
class TeacherSpec:
    """A parsed ``KIND:PATH_OR_NAME[:MAX_DEPTH]``.

    Attributes:
        kind: One of :data:`TEACHER_KINDS`.
        target: A file path, a registry name (``dav2-metric``) or ``default`` (``metric-solver``).
        max_depth_m: The given maximum depth [m] (None: from the registry, or none).
    """

    kind: str
    target: str
    max_depth_m: float | None = None


def parse_teacher(text: str, max_depth_m: float | None = None) -> TeacherSpec:
    """Parse ``KIND:PATH_OR_NAME[:MAX_DEPTH]``; ``max_depth_m`` (an option) wins over the suffix.

    Raises:
        ValueError: Unknown kind, no path, or a maximum depth that is not a number > 0.
    """
    kind, sep, rest = text.partition(':')
    if kind not in TEACHER_KINDS or not sep or not rest:
        raise ValueError(f'teacher {text!r}: expected KIND:PATH_OR_NAME[:MAX_DEPTH] with KIND one '
                         f'of {", ".join(TEACHER_KINDS)}')
    suffix = None
    head, sep, tail = rest.rpartition(':')
    if sep and head:
        try:
            suffix = float(tail)
            rest = head
        except ValueError:
            pass  # a path with a colon
    chosen = max_depth_m if max_depth_m is not None else suffix
    if chosen is not None and not (np.isfinite(chosen) and chosen > 0):
        raise ValueError(f'teacher {text!r}: the maximum depth must be > 0 m, got {chosen}')
    return TeacherSpec(kind, rest, None if chosen is None else float(chosen))


@dataclass(frozen=True)
class TeacherFile:
    """A teacher's file and what it can teach, known without loading it (:func:`find_teacher`).

    Attributes:
        kind: One of :data:`TEACHER_KINDS`.
        path: The file.
        sha256: Its SHA-256 (lower-case hex).
        max_depth_m: A DA-V2 teacher's maximum depth [m]; None for ``metric-solver``.
        anchor_max_m: The largest depth [m] it can teach: ``max_depth_m``, or its pool's largest
            anchor.
    """

    kind: str
    path: pathlib.Path
    sha256: str
    max_depth_m: float | None
    anchor_max_m: float

    @property
    def label_cap_m(self) -> float:
        """Its depths at or above this [m] are lower bounds (0: none; :data:`CAP_FRACTION`)."""
        return 0.0 if self.max_depth_m is None else CAP_FRACTION * self.max_depth_m

    def describe(self) -> dict[str, Any]:
        """``{"kind", "file", "sha256", "max_depth_m"}``: the report's and metadata's record."""
        return {'kind': self.kind, 'file': self.path.name, 'sha256': self.sha256,
                'max_depth_m': self.max_depth_m}


def find_teacher(spec: TeacherSpec, cache_dir: str | None = None) -> TeacherFile:
    """Find a teacher's file, checksum it and read its range (header only for our checkpoints).

    Args:
        spec: What :func:`parse_teacher` returned.
        cache_dir: The weights cache (None: ``download.cache_dir()``).

    Raises:
        FileNotFoundError: No such file; a registry name not in the cache says what to run.
        ValueError: A registered file that is not a metric depth model, or a DA-V2 file whose
            maximum depth is neither registered nor given.
    """
    from metric_solver_ros.download import cache_dir as default_cache
    from metric_solver_ros.download import file_sha256
    from metric_solver_ros.weights_registry import REGISTRY

    if spec.kind == 'metric-solver':
        from metric_solver_ros.checkpoint import default_model_path, read_checkpoint_config

        path = default_model_path() if spec.target == 'default' else pathlib.Path(spec.target)
        if not path.is_file():
            raise FileNotFoundError(f'teacher {spec.target}: no such checkpoint file')
        pool_max_m = read_checkpoint_config(path).anchor_pool_m[-1]
        return TeacherFile(spec.kind, path, file_sha256(path), None, pool_max_m)
    entry = REGISTRY.get(spec.target)
    if entry is not None:
        path = default_cache(cache_dir) / entry.file_name
        if not path.is_file():
            accept = ' --accept-license' if entry.needs_acceptance else ''
            raise FileNotFoundError(f'teacher {entry.name} is not in the weights cache ({path}); '
                                    f'fetch it first: metric-solver weights get {entry.name}'
                                    f'{accept}')
    else:
        path = pathlib.Path(spec.target).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f'teacher {spec.target}: no such file, and not a registered '
                                    f'name (metric-solver weights list)')
        entry = next((e for e in REGISTRY.values() if e.file_name == path.name), None)
    if entry is not None and entry.kind != 'metric depth':
        raise ValueError(f'teacher {spec.target}: {entry.name} is a {entry.kind} model, not a '
                         f'metric one (depth_anything_v2_metric_*)')
    max_depth_m = spec.max_depth_m if spec.max_depth_m is not None else (
        None if entry is None else entry.max_depth_m)
    if max_depth_m is None:
        raise ValueError(f'teacher {spec.target}: its maximum depth is unknown (not a registered '
                         f'file): pass --teacher-max-depth M (20 for the Hypersim models, 80 for '
                         f'the Virtual KITTI ones) or dav2-metric:{spec.target}:M')
    return TeacherFile(spec.kind, path, file_sha256(path), max_depth_m, max_depth_m)


def spread_anchors(pool_m: Sequence[float], count: int) -> tuple[float, ...]:
    """At most ``count`` anchors [m] of ``pool_m``, evenly spread over it (both ends kept)."""
    pool = sorted(float(a) for a in pool_m)
    if len(pool) <= count:
        return tuple(pool)
    picks = np.unique(np.round(np.linspace(0, len(pool) - 1, count)).astype(int))
    return tuple(pool[i] for i in picks)


class Teacher:
    """A loaded teacher (:func:`load_teacher`).

    Attributes:
        file: Its file and range.
        input_px: Shorter side of its network input [px].
    """

    file: TeacherFile
    input_px: int

    def depth_m(self, rgb: np.ndarray) -> np.ndarray:
        """float32 [H, W] depth [m] of an RGB uint8 [H, W, 3] image, at its resolution."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights (DA-V2 or Metric-Solver keys), for a student's initialisation."""
        raise NotImplementedError


class DepthAnythingV2Teacher(Teacher):
    """A Depth Anything V2 metric model (``DepthAnythingV2.infer``)."""

    def __init__(self, file: TeacherFile, device: Any, input_px: int | None) -> None:
        from metric_solver_ros.checkpoint import load_depth_anything_v2

        self.file, self.input_px = file, int(input_px or DAV2_INPUT_PX)
        self.model = load_depth_anything_v2(file.path, max_depth_m=file.max_depth_m,
                                            device=device)

    def depth_m(self, rgb: np.ndarray) -> np.ndarray:  # noqa: D102 - see Teacher
        return self.model.infer(rgb, self.input_px).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:  # noqa: D102 - see Teacher
        return self.model.state_dict()


class MetricSolverTeacher(Teacher):
    """One of our checkpoints: the fusion of (up to the engine's limit) its pool's anchors."""

    def __init__(self, file: TeacherFile, device: str, input_px: int | None) -> None:
        from metric_solver_ros.engine import MAX_ANCHORS, DepthEngine

        self.file = file
        self.engine = DepthEngine.from_checkpoint(str(file.path), device=device,
                                                  precision='fp32', input_size=input_px)
        self.input_px = self.engine.input_size
        self.anchors_m = spread_anchors(self.engine.pool_m, MAX_ANCHORS)

    def depth_m(self, rgb: np.ndarray) -> np.ndarray:  # noqa: D102 - see Teacher
        return self.engine.infer(rgb, self.anchors_m).depth_m

    def state_dict(self) -> dict[str, Any]:  # noqa: D102 - see Teacher
        return self.engine.model.state_dict()


def load_teacher(file: TeacherFile, device: str = 'auto', input_px: int | None = None
                 ) -> Teacher:
    """Load a teacher on ``device`` (``auto``, ``cpu``, ``cuda[:N]``), in float32.

    Args:
        file: What :func:`find_teacher` returned.
        device: Where the teacher runs.
        input_px: Shorter side of its network input [px] (None: 518 for DA-V2, the
            checkpoint's own for ``metric-solver``).

    Raises:
        ValueError: A file that does not load (``checkpoint.CheckpointError``).
    """
    from metric_solver_ros.engine import resolve_device

    if file.kind == 'metric-solver':
        return MetricSolverTeacher(file, device, input_px)
    return DepthAnythingV2Teacher(file, resolve_device(device), input_px)


def teacher_predictor(teacher: Teacher, name: str):
    """An ``evaluation`` predictor: ``frame -> {name: Prediction(teacher depth)}``."""
    from metric_solver_ros.evaluation import Prediction

    def predict(frame: Any) -> dict[str, Prediction]:
        return {name: Prediction(teacher.depth_m(np.asarray(frame.image)))}

    return predict
