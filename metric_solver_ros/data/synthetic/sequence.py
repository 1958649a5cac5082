"""Camera sequences through one synthetic scene: exact depth and camera poses per frame.

A sequence is one ``SceneSpec`` (from ``scene_spec``) seen by a moving camera. Every frame is a
``SceneSpec`` of its own that shares the scene's solids and materials, with its camera pose,
its exposure and its sensor-noise seed, and is rendered by the same ``render_specs`` as single
frames (so a frame and a single scene with the same description are the same pixels).

Motions (``MOTIONS``):

- ``static``: the camera stays where the generator put it;
- ``pan``: it turns about the vertical axis at 8-15 deg/s, centred on the generator's view;
- ``forward``: it moves along its horizontal heading, walking (0.8-1.4 m/s) indoors, walking or
  driving (3-8 m/s) outdoors. The path keeps ``WALL_MARGIN_M`` from the room's walls and
  ``SOLID_MARGIN_M`` from every solid; a scene whose free path is shorter than the motion asks
  for is replaced by the next candidate scene (deterministically), and after
  ``SCENE_ATTEMPTS`` the camera moves only as far as the freest scene allows.

Every motion adds what a real camera has per frame: a small mount vibration (a rotation of
about 0.1 deg indoors / 0.2 deg outdoors and a translation of 1 / 3 mm, independent per frame),
a slow exposure drift (about +-8 %) and a new sensor-noise pattern (noise std at least
``MIN_NOISE_STD``). The vibration is part of the true pose: the poses are exact.

Poses are 4x4 camera-to-world transforms ``T_world_cam`` (OpenCV camera axes: x right, y down,
z forward) in a right-handed ROS world frame (REP 103: x forward, y left, z up), which is the
synthetic world (x right, y up, z forward, left-handed) turned by ``SYNTHETIC_TO_WORLD``.
A point at pixel (u, v) with planar depth z lies at ``T_world_cam @ (z (u - cx) / fx,
z (v - cy) / fy, z, 1)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic.generate import scene_spec
from metric_solver_ros.data.synthetic.raycast import render_specs
from metric_solver_ros.data.synthetic.scene import KINDS, Box, Camera, SceneSpec

MOTIONS = ('static', 'pan', 'forward')
#: Synthetic world (x right, y up, z forward) -> ROS world (x forward, y left, z up).
SYNTHETIC_TO_WORLD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
#: Smallest distance [m] of a forward path to a room wall.
WALL_MARGIN_M = 0.5
#: Smallest distance [m] of a forward path to a solid (furniture, vehicles, buildings).
SOLID_MARGIN_M = 0.35
#: Candidate scenes tried for a forward motion before the freest one is shortened.
SCENE_ATTEMPTS = 12
#: Smallest sensor-noise std of a sequence frame (in [0, 1] output units): noise changes per frame.
MIN_NOISE_STD = 0.008

_MOTION_CODE = {'static': 1, 'pan': 2, 'forward': 3}
_KIND_CODE = {'indoor': 1, 'outdoor': 2}


@dataclass
class PosedSample(Sample):
    """A ``Sample`` with its exact camera pose.

    Attributes:
        pose_world_cam: 4x4 float64 camera-to-world transform (see the module docstring).
    """

    pose_world_cam: np.ndarray | None = None


@dataclass
class SequenceSpec:
    """The frames of one camera sequence, ready to render.

    Attributes:
        kind: ``'indoor'`` or ``'outdoor'``.
        motion: One of ``MOTIONS``.
        seed: The sequence seed.
        scene_seed: Seed of the scene (``scene_spec(kind, scene_seed)``) the camera moves in.
        rate_hz: Frame rate [Hz] the motion was sampled at.
        specs: One scene description per frame.
    """

    kind: str
    motion: str
    seed: int
    scene_seed: int
    rate_hz: float
    specs: list[SceneSpec]

    def poses_world_cam(self) -> list[np.ndarray]:
        """The 4x4 camera-to-world transform of every frame (module docstring)."""
        return [camera_pose(spec.camera) for spec in self.specs]


def camera_pose(camera: Camera) -> np.ndarray:
    """4x4 camera-to-world transform of a synthetic camera in the ROS world frame."""
    pose = np.eye(4)
    pose[:3, :3] = SYNTHETIC_TO_WORLD @ camera.rotation()
    pose[:3, 3] = SYNTHETIC_TO_WORLD @ np.asarray(camera.position_m, dtype=np.float64)
    return pose


def _solid_clearance(boxes: list[Box], points_m: np.ndarray) -> np.ndarray:
    """Distance [m] of each point (synthetic world, [N, 3]) to the nearest solid's bounds."""
    if not boxes:
        return np.full(len(points_m), np.inf)
    centre = np.array([b.centre_m for b in boxes])  # [B, 3]
    half = np.array([b.size_m for b in boxes]) / 2.0
    yaw = np.array([b.yaw_rad for b in boxes])
    offset = points_m[:, None, :] - centre[None]  # [N, B, 3]
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.stack([c * offset[..., 0] - s * offset[..., 2], offset[..., 1],
                      s * offset[..., 0] + c * offset[..., 2]], axis=-1)
    outside = np.maximum(np.abs(local) - half[None], 0.0)
    return np.sqrt((outside**2).sum(-1)).min(axis=1)


def _free_length(spec: SceneSpec, heading: np.ndarray, wanted_m: float) -> float:
    """How far [m] (up to ``wanted_m``) the camera can move along ``heading`` with margins."""
    start = np.asarray(spec.camera.position_m, dtype=np.float64)
    free = wanted_m
    if spec.room is not None:  # the walls: stay WALL_MARGIN_M inside the room
        x0, x1, _, _, z0, z1 = spec.room.bounds_m
        for axis, lo, hi in ((0, x0, x1), (2, z0, z1)):
            step = heading[axis]
            if step > 1e-9:
                free = min(free, (hi - WALL_MARGIN_M - start[axis]) / step)
            elif step < -1e-9:
                free = min(free, (lo + WALL_MARGIN_M - start[axis]) / step)
    free = max(free, 0.0)
    distances = np.linspace(0.0, free, max(2, int(free / 0.05) + 1))
    blocked = _solid_clearance(spec.boxes, start + distances[:, None] * heading) < SOLID_MARGIN_M
    if blocked.any():  # stop one step before the first blocked point
        free = float(distances[max(int(np.argmax(blocked)) - 1, 0)])
    return free


def _candidate_seed(seed: int, attempt: int) -> int:
    """Scene seed of candidate ``attempt``: the sequence seed itself first."""
    if attempt == 0:
        return seed
    return int(np.random.default_rng([seed, attempt, 0x5E9]).integers(0, 2**62))


def sequence_spec(kind: str, motion: str, frames: int, seed: int,
                  rate_hz: float = 10.0) -> SequenceSpec:
    """Lay out a camera sequence (deterministic for its arguments).

    Args:
        kind: ``'indoor'`` or ``'outdoor'``.
        motion: ``'static'``, ``'pan'`` or ``'forward'``.
        frames: Number of frames (>= 1).
        seed: Non-negative sequence seed.
        rate_hz: Frame rate [Hz]: speeds are per second.

    Returns:
        The sequence (resolution independent).
    """
    if kind not in KINDS:
        raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
    if motion not in MOTIONS:
        raise ValueError(f'motion must be one of {MOTIONS}, got {motion!r}')
    if frames < 1:
        raise ValueError(f'frames must be >= 1, got {frames}')
    if not rate_hz > 0:
        raise ValueError(f'rate must be > 0 Hz, got {rate_hz}')
    seed = int(seed)
    if seed < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    rng = np.random.default_rng([seed, _KIND_CODE[kind], _MOTION_CODE[motion], 0x5E9])
    times_s = np.arange(frames) / rate_hz
    duration_s = float(times_s[-1])

    scene_seed = seed
    base = scene_spec(kind, seed)
    travel_m = 0.0
    if motion == 'forward':
        speed = float(rng.uniform(0.8, 1.4) if kind == 'indoor' else rng.uniform(3.0, 8.0))
        wanted_m = speed * duration_s
        best = (-1.0, seed, base)
        for attempt in range(SCENE_ATTEMPTS):
            candidate = _candidate_seed(seed, attempt)
            spec = base if attempt == 0 else scene_spec(kind, candidate)
            yaw = spec.camera.yaw_rad
            free = _free_length(spec, np.array([math.sin(yaw), 0.0, math.cos(yaw)]), wanted_m)
            if free > best[0]:
                best = (free, candidate, spec)
            if free >= wanted_m:
                break
        travel_m, scene_seed, base = best
    pan_rate = math.radians(rng.uniform(8.0, 15.0)) * (1.0 if rng.random() < 0.5 else -1.0)
    outdoor = kind == 'outdoor'
    vib_rad = math.radians(0.2 if outdoor else 0.1)
    vib_m = 0.003 if outdoor else 0.001
    drift_hz, drift_phase = rng.uniform(0.1, 0.3), rng.uniform(0.0, 2.0 * math.pi)
    noise_seeds = rng.integers(0, 2**31 - 1, frames)
    vibration = rng.normal(0.0, 1.0, (frames, 6))

    cam0 = base.camera
    heading = np.array([math.sin(cam0.yaw_rad), 0.0, math.cos(cam0.yaw_rad)])
    specs = []
    for i, t in enumerate(times_s):
        position = np.asarray(cam0.position_m, dtype=np.float64)
        yaw = cam0.yaw_rad
        if motion == 'forward' and duration_s > 0:
            position = position + heading * travel_m * (t / duration_s)
        elif motion == 'pan':
            yaw += pan_rate * (t - duration_s / 2.0)
        position = position + vib_m * vibration[i, :3]
        camera = dataclasses.replace(
            cam0, position_m=tuple(float(v) for v in position),
            yaw_rad=float(yaw + vib_rad * vibration[i, 3]),
            pitch_rad=float(cam0.pitch_rad + vib_rad * vibration[i, 4]),
            roll_rad=float(cam0.roll_rad + vib_rad * vibration[i, 5]))
        lighting = dataclasses.replace(
            base.lighting,
            exposure=base.lighting.exposure
            * math.exp(0.08 * math.sin(2.0 * math.pi * drift_hz * t + drift_phase)),
            noise_std=max(base.lighting.noise_std, MIN_NOISE_STD))
        specs.append(dataclasses.replace(base, camera=camera, lighting=lighting,
                                         seed=int(noise_seeds[i])))
    return SequenceSpec(kind, motion, seed, scene_seed, float(rate_hz), specs)


def render_sequence(sequence: SequenceSpec, height: int, width: int,
                    device: torch.device | str = 'cpu') -> Iterator[PosedSample]:
    """Render a sequence frame by frame (one frame in memory at a time).

    Args:
        sequence: What :func:`sequence_spec` returned.
        height: Image height [px].
        width: Image width [px].
        device: Torch device to render on.

    Yields:
        One ``PosedSample`` per frame (depth +inf for sky), named
        ``synthetic/<kind>/<motion>/<seed>/<frame>``.
    """
    for index, spec in enumerate(sequence.specs):
        out = render_specs([spec], height, width, device)
        yield PosedSample(
            image=out['image'][0].permute(1, 2, 0).cpu().numpy(),
            depth_m=out['depth_m'][0, 0].cpu().numpy(),
            intrinsics=tuple(float(x) for x in out['intrinsics'][0].cpu()),  # type: ignore[arg-type]
            name=f'synthetic/{sequence.kind}/{sequence.motion}/{sequence.seed}/{index:04d}',
            scene=sequence.kind, pose_world_cam=camera_pose(spec.camera))
