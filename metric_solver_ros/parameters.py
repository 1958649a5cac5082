"""The node's parameters: one table (name, default, unit, description, range, read-only).

The node declares exactly these (``node.py``), ``config/depth.yaml`` lists them with their
defaults (a test keeps the two in step), and the README's parameter table is generated from here
(``python -m metric_solver_ros.parameters``). Validation of runtime changes lives in
:func:`validate_changes`, the single path for the ``anchor`` parameter, topic and service.
"""

from __future__ import annotations

import array
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from metric_solver_ros.anchor_modes import MODES as ANCHOR_MODES
from metric_solver_ros.backends import BACKENDS
from metric_solver_ros.engine import DEVICES, PRECISIONS, RESIZE_MODES

IMAGE_TRANSPORTS = ('raw', 'compressed')


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: Parameter name.
        default: Default value (its Python type is the parameter type; ``[]`` = double array).
        description: One sentence for ``ros2 param describe`` and the README, unit included.
        read_only: True when it cannot change after start-up.
        float_range: ``(min, max)`` for doubles; for the anchors this is filled in from the
            loaded model's pool at start-up.
        int_range: ``(min, max, step)`` for integers.
        choices: Allowed strings.
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int, int] | None = None
    choices: tuple[str, ...] | None = None


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- fixed at start-up
    ParamSpec('checkpoint', '', 'Metric-Solver safetensors checkpoint to load; empty = the '
              'bundled default model (synthetic-trained, for demos).', read_only=True),
    ParamSpec('device', 'auto', 'Where the network runs: auto (CUDA if available, else CPU), '
              'cuda or cpu; cuda fails at start-up when CUDA is missing.', read_only=True,
              choices=DEVICES),
    ParamSpec('precision', 'auto', 'Network precision: auto (bf16/fp16 on CUDA, fp32 on CPU), '
              'fp32, fp16 or bf16; decoding and fusion are always fp32.', read_only=True,
              choices=PRECISIONS),
    ParamSpec('input_size', 0, 'Shorter side of the network input [px], a multiple of 14; '
              '0 = the model\'s default.', read_only=True, int_range=(0, 2044, 14)),
    ParamSpec('resize_mode', 'keep_aspect', 'keep_aspect (the longer side follows the image) '
              'or square.', read_only=True, choices=RESIZE_MODES),
    ParamSpec('compile', False, 'Compile the network with torch.compile at start-up.',
              read_only=True),
    ParamSpec('cuda_graphs', False, 'On CUDA, replay the encoder and decoder as CUDA graphs '
              '(captured per image size and anchor count on first use); no effect on the CPU; '
              'not with compile.', read_only=True),
    ParamSpec('image_transport', 'raw', 'raw: subscribe to `image` (sensor_msgs/Image); '
              'compressed: subscribe to `image/compressed` (sensor_msgs/CompressedImage).',
              read_only=True, choices=IMAGE_TRANSPORTS),
    ParamSpec('backend', 'torch', 'What runs the network: torch; openvino or onnxruntime (the '
              'model\'s ONNX export, made at the first frame\'s network size and cached in '
              '~/.cache/metric_solver_ros/onnx); auto: torch on CUDA, on the CPU OpenVINO when '
              'installed and faster than torch on the first frame.', read_only=True,
              choices=BACKENDS),
    ParamSpec('num_threads', 0, 'CPU threads of the network (torch and the ONNX runtimes); '
              '0 = every usable core, at most 4. Idle threads sleep instead of spinning; set it '
              'below the core count to leave cores to other nodes.', read_only=True,
              int_range=(0, 256, 1)),
    # --- dynamic
    ParamSpec('anchor', 10.0, 'Anchor depth [m]: pixels nearer than it use the near branch. '
              'Small for manipulation (0.5-2), large for navigation (20-120). Must lie in the '
              'model\'s anchor pool range.', float_range=(0.0, 0.0)),
    ParamSpec('anchors', [], 'Several anchors [m] fused per pixel (finest anchor that covers '
              'the pixel); empty = the single `anchor`.', float_range=(0.0, 0.0)),
    ParamSpec('anchor_mode', 'fixed', 'fixed: use `anchor`/`anchors`; auto: pick the anchor from '
              'the previous frame\'s depth; roi: smallest anchor covering `roi`.',
              choices=ANCHOR_MODES),
    ParamSpec('roi', [0, 0, 0, 0], 'Region of interest for anchor_mode roi: x, y, width, height '
              '[px] in the input image; width or height 0 = the whole image.'),
    ParamSpec('flip_tta', False, 'Average the network outputs of the image and its mirror '
              '(about 2x the network time).'),
    ParamSpec('far_limit', 0.0, 'Depths beyond this [m] are published as +inf; 0 = no limit '
              'other than the representation\'s (anchor + 552 m).', float_range=(0.0, 1e6)),
    ParamSpec('publish_points', True, 'Publish `points` (needs camera_info).'),
    ParamSpec('points_stride', 1, 'Keep every n-th pixel in x and y in `points` (organised '
              'cloud of H/n x W/n). A full 640x480 cloud is 4.9 MB a frame and can bound the '
              'node\'s rate; 2 sends a quarter.', int_range=(1, 64, 1)),
    ParamSpec('points_max_range', 0.0, 'Points farther than this [m] from the camera become NaN '
              'in `points`; 0 = keep every finite point.', float_range=(0.0, 1e6)),
    ParamSpec('redecode_on_anchor_change', True, 'When the anchor changes, publish the last '
              'frame re-decoded with the new anchor at once (decoder cost only).'),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class RuntimeSettings:
    """The dynamic parameters' values in effect (immutable; replaced as a whole on change)."""

    anchor: float
    anchors: tuple[float, ...]
    anchor_mode: str
    roi: tuple[int, int, int, int]
    flip_tta: bool
    far_limit: float
    publish_points: bool
    points_stride: int
    points_max_range: float
    redecode_on_anchor_change: bool

    @property
    def fixed_anchors(self) -> tuple[float, ...]:
        """The anchors requested by the user: ``anchors`` when non-empty, else ``anchor``."""
        return self.anchors or (self.anchor,)

    @property
    def roi_or_none(self) -> tuple[int, int, int, int] | None:
        """The ROI, or None when it is the whole image (zero width or height)."""
        return self.roi if self.roi[2] > 0 and self.roi[3] > 0 else None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name} must be a number, got {value!r}')
    return float(value)


def validate_changes(current: RuntimeSettings, changes: Mapping[str, Any],
                     check_anchors: Callable[[Sequence[float]], tuple[float, ...]]
                     ) -> RuntimeSettings:
    """Validate a set of dynamic parameter changes; return the settings they lead to.

    Args:
        current: The settings in effect.
        changes: Parameter name -> new value (only dynamic parameters).
        check_anchors: The engine's anchor validation (raises ``ValueError`` with a reason).

    Returns:
        The new settings (``current`` is unchanged).

    Raises:
        ValueError: With a reason naming the parameter; nothing is applied then.
    """
    updates: dict[str, Any] = {}
    for name, value in changes.items():
        spec = SPECS.get(name)
        if spec is None or spec.read_only:
            raise ValueError(f'{name} cannot be changed at runtime')
        if name == 'anchor':
            value = _number(name, value)
            check_anchors([value])
            updates[name] = value
        elif name == 'anchors':
            values = [] if value is None else list(value)
            anchors = tuple(_number(name, v) for v in values)
            updates[name] = check_anchors(anchors) if anchors else ()
        elif name == 'anchor_mode':
            if value not in ANCHOR_MODES:
                raise ValueError(f'anchor_mode must be one of {", ".join(ANCHOR_MODES)}, '
                                 f'got {value!r}')
            updates[name] = value
        elif name == 'roi':
            # rclpy hands integer arrays over as list or array.array('q'), depending on the path
            values = list(value) if isinstance(value, (list, tuple, array.array)) else None
            if (values is None or len(values) != 4 or any(isinstance(v, bool) or
                                                          not isinstance(v, int) for v in values)
                    or any(v < 0 for v in values)):
                raise ValueError(f'roi must be 4 integers >= 0 (x, y, width, height), '
                                 f'got {value!r}')
            updates[name] = tuple(values)
        elif name in ('far_limit', 'points_max_range'):
            value = _number(name, value)
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f'{name} must be a finite number >= 0 [m], got {value}')
            updates[name] = value
        elif name == 'points_stride':
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f'points_stride must be an integer in [1, 64], got {value!r}')
            updates[name] = value
        elif isinstance(spec.default, bool):
            if not isinstance(value, bool):
                raise ValueError(f'{name} must be a boolean, got {value!r}')
            updates[name] = value
        else:  # pragma: no cover - every dynamic parameter is handled above
            raise ValueError(f'{name} has no validation rule')
    return replace(current, **updates)


def initial_settings() -> RuntimeSettings:
    """Settings from the table's defaults (before overrides are applied)."""
    fields = RuntimeSettings.__dataclass_fields__
    values = {name: SPECS[name].default for name in fields}
    values['anchors'] = tuple(values['anchors'])
    values['roi'] = tuple(values['roi'])
    return RuntimeSettings(**values)


def markdown_table() -> str:
    """The README's parameter table."""
    rows = ['| Parameter | Default | Runtime | Description |', '|---|---|---|---|']
    for spec in PARAMETERS:
        default = repr(spec.default) if isinstance(spec.default, str) else str(spec.default)
        runtime = 'read-only' if spec.read_only else 'dynamic'
        choices = f' One of: {", ".join(spec.choices)}.' if spec.choices else ''
        rows.append(f'| `{spec.name}` | `{default}` | {runtime} | {spec.description}{choices} |')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(markdown_table())
