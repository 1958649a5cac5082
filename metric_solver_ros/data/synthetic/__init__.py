"""A procedural world with exact metric depth, rendered by vectorised ray casting in torch.

Scenes are built from a seed (``scene_spec``) as plain-Python descriptions (``SceneSpec``: a
camera, an optional room interior, an optional ground plane, yaw-rotated solids (boxes, vertical
cylinders, ellipsoids) and materials), then rendered in batches on any torch device
(``render_specs``). The same code runs on CPU and CUDA; the scene layout comes from numpy and is
identical on every device; float rounding and the sensor-noise pattern (a torch generator seeded
per frame) differ between devices. Rendering is deterministic for a given device.

Modules, in the order a frame is made:

- ``scene``: the description types (``Camera`` ... ``SceneSpec``), world and camera frames.
- ``builder``: what the generators share (materials by class, random intrinsics, people).
- ``indoor`` / ``outdoor``: the random scene generators; ``generate.scene_spec`` picks one.
- ``packing``: ``PackedScenes`` / ``pack_scenes``, descriptions as padded arrays.
- ``intersect``: rays against solids, culled by screen tiles; sun shadows.
- ``raycast``: ``render_specs`` in stages (geometry, shading, camera), ``render_batch``,
  ``render_scene``.
- ``sequence``: camera sequences through one scene (``sequence_spec``, ``render_sequence``) with
  exact poses.
"""

from metric_solver_ros.data.synthetic.generate import scene_spec
from metric_solver_ros.data.synthetic.intersect import NEAR_M, TILE_PX
from metric_solver_ros.data.synthetic.packing import PackedScenes, pack_scenes
from metric_solver_ros.data.synthetic.raycast import render_batch, render_scene, render_specs
from metric_solver_ros.data.synthetic.scene import (
    KINDS,
    SHAPES,
    Box,
    Camera,
    Ground,
    Lighting,
    Material,
    Room,
    SceneSpec,
)
from metric_solver_ros.data.synthetic.sequence import (
    MOTIONS,
    PosedSample,
    SequenceSpec,
    camera_pose,
    render_sequence,
    sequence_spec,
)

__all__ = [
    'KINDS',
    'MOTIONS',
    'NEAR_M',
    'SHAPES',
    'TILE_PX',
    'Box',
    'Camera',
    'Ground',
    'Lighting',
    'Material',
    'PackedScenes',
    'PosedSample',
    'Room',
    'SceneSpec',
    'SequenceSpec',
    'camera_pose',
    'pack_scenes',
    'render_batch',
    'render_scene',
    'render_sequence',
    'render_specs',
    'scene_spec',
    'sequence_spec',
]
