"""The node's parameters: one table (name, default, unit, description, range, read-only).

The node declares exactly these (``node_parameters.py``), ``config/depth.yaml`` lists them with
their defaults (a test keeps the two in step), and the README's parameter table is generated
from here (``python -m metric_solver_ros.parameters``). Validation of runtime changes lives in
:func:`validate_changes`, the single path for the ``anchor`` parameter, topic and service.

Torch-free: the one entry whose names live behind torch (``fusion``: the rules of
``model/fusion.py``) is completed when first asked for (:func:`parameter_table`).
"""

from __future__ import annotations

import array
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from metric_solver_ros.anchor_modes import MODES as ANCHOR_MODES
from metric_solver_ros.backends import BACKENDS
from metric_solver_ros.conversions import DEPTH_ENCODINGS as DEPTH_IMAGE_ENCODINGS
from metric_solver_ros.runtime_options import (
    DEVICES,
    MULTI_ANCHOR_RESOLUTIONS,
    PRECISIONS,
    RESIZE_MODES,
)
from metric_solver_ros.temporal_filter import MODES as TEMPORAL_FILTER_MODES

IMAGE_TRANSPORTS = ('raw', 'compressed')
#: Encodings of the ``depth`` output: 32FC1 metres (REP 117), 16UC1 millimetres (REP 118).
DEPTH_ENCODINGS = tuple(DEPTH_IMAGE_ENCODINGS)


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
        options_from: For options whose names live in a module that needs torch: returns
            ``(default, choices)``; :func:`parameter_table` fills them in (``default`` and
            ``choices`` are None until then).
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int, int] | None = None
    choices: tuple[str, ...] | None = None
    options_from: Callable[[], tuple[str, tuple[str, ...]]] | None = None


def _fusion_options() -> tuple[str, tuple[str, ...]]:
    """The default fusion rule and every rule, from their home (imports torch)."""
    from metric_solver_ros.model.fusion import DEFAULT_FUSION, FUSION_RULES

    return DEFAULT_FUSION, FUSION_RULES


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
    ParamSpec('cuda_graphs', False, 'On CUDA, replay each frame as two CUDA graphs, the '
              'encoder and the decoder with fusion, cloud and statistics (captured per image '
              'size, anchor count and outputs on first use); no effect on the CPU; not with '
              'compile.', read_only=True),
    ParamSpec('multi_anchor_resolution', 'full', 'full, or half: when several anchors are '
              'decoded (`anchors`, auto/roi switches), the heads\' finest stages run at half '
              'resolution, cheaper per extra anchor but blurrier at edges '
              '(benchmarks/RESULTS.md, "Extra anchors"); torch backend only.', read_only=True,
              choices=MULTI_ANCHOR_RESOLUTIONS),
    ParamSpec('channels_last', False, 'Channels-last (NHWC) network weights, the layout GPU '
              'convolutions prefer in half precision; the same depth either way.',
              read_only=True),
    ParamSpec('image_transport', 'raw', 'raw: subscribe to `image` (sensor_msgs/Image); '
              'compressed: subscribe to `<image>/compressed` (sensor_msgs/CompressedImage), '
              'where `<image>` is the resolved `image` topic (image_transport\'s convention: '
              '`-r image:=/camera/image_raw` serves both).',
              read_only=True, choices=IMAGE_TRANSPORTS),
    ParamSpec('depth_encoding', '32FC1', '`depth` image encoding: 32FC1 (metres; NaN undefined, '
              '+inf beyond the far limit, REP 117) or 16UC1 (millimetres, REP 118: 0 = no '
              'depth, also for +inf and for depths beyond 65.535 m).', read_only=True,
              choices=DEPTH_ENCODINGS),
    ParamSpec('backend', 'torch', 'What runs the network: torch; openvino or onnxruntime (the '
              'model\'s ONNX export, made at the first frame\'s network size and cached in '
              '~/.cache/metric_solver_ros/onnx); auto: torch on CUDA, on the CPU OpenVINO when '
              'installed and faster than torch on the first frame.', read_only=True,
              choices=BACKENDS),
    ParamSpec('num_threads', 0, 'CPU threads of the network (torch and the ONNX runtimes); '
              '0 = every usable core, at most 4, and with backend openvino its encoder also '
              'tries one thread now and then and keeps it unless all threads are 10 % faster '
              '(a CPU other nodes keep busy). Idle threads sleep instead of spinning; set it '
              'below the core count to leave cores to other nodes.', read_only=True,
              int_range=(0, 256, 1)),
    ParamSpec('odometry_topic', '', 'nav_msgs/Odometry topic of the robot carrying the camera '
              '(e.g. odom); empty = none. Its twist tells the temporal filter when the camera is '
              'still, and the filter then holds the scale instead of following its slow wobble '
              '(odometry more than 0.5 s from an image\'s stamp counts as unknown).',
              read_only=True),
    # --- dynamic
    ParamSpec('anchor', 10.0, 'Anchor depth [m]: pixels nearer than it use the near branch. '
              'Small for manipulation (0.5-2), large for navigation (20-120). Must lie in the '
              'model\'s anchor pool range. With anchor_mode auto or roi, set anchor_mode fixed '
              'first (the set_anchor service and the anchor topic do it for you).',
              float_range=(0.0, 0.0)),
    ParamSpec('anchors', [], 'Several anchors [m] fused per pixel by the `fusion` rule; empty = '
              'the single `anchor`.', float_range=(0.0, 0.0)),
    ParamSpec('fusion', None, 'Rule fusing several `anchors` per pixel (docs/METHOD.md, '
              '"Multi-anchor fusion").', options_from=_fusion_options),
    ParamSpec('anchor_mode', 'fixed', 'fixed: use `anchor`/`anchors`; auto: pick the anchor from '
              'the previous frame\'s depth; roi: smallest anchor covering `roi`.',
              choices=ANCHOR_MODES),
    ParamSpec('roi', [0, 0, 0, 0], 'Region of interest for anchor_mode roi: x, y, width, height '
              '[px] in the input image; width or height 0 = the whole image.'),
    ParamSpec('temporal_filter', 'off', 'Temporal filter of the published depth: off; scale '
              '(smooths the per-frame global scale, motion-safe; holds it while `odometry_topic` '
              'says the camera is still); full (also smooths static pixels, resets where the '
              'scene moves). It resets itself on an anchor change, a '
              'scene cut, a new camera frame or a stamp going back (docs/EVALUATION.md).',
              choices=TEMPORAL_FILTER_MODES),
    ParamSpec('flip_tta', False, 'Average the network outputs of the image and its mirror '
              '(about 2x the network time).'),
    ParamSpec('far_limit', 200.0, 'Depths beyond this [m] are published as +inf ("too far"). '
              'The far branch resolves coarsely there (an output error of 0.01 is ~60 m at '
              '200 m past the anchor) and sky the network misses lands at 300-400 m; 0 = no '
              'limit other than the representation\'s (anchor + 552 m).',
              float_range=(0.0, 1e6)),
    ParamSpec('publish_points', True, 'Publish `points` (needs camera_info).'),
    ParamSpec('points_stride', 1, 'Keep every n-th pixel in x and y in `points` (organised '
              'cloud of H/n x W/n). A full 640x480 cloud is 4.9 MB a frame and can bound the '
              'node\'s rate; 2 sends a quarter.', int_range=(1, 64, 1)),
    ParamSpec('points_max_range', 30.0, 'Points farther than this [m] from the camera become '
              'NaN in `points`, so that far, coarse depths (and sky) stay out of costmaps; raise '
              'it with large anchors outdoors; 0 = keep every finite point.',
              float_range=(0.0, 1e6)),
    ParamSpec('redecode_on_anchor_change', True, 'When the anchor changes, publish the last '
              'frame re-decoded with the new anchor at once (decoder cost only; `depth_info` '
              'says `redecoded`).'),
    ParamSpec('expected_rate_hz', 0.0, 'Output rate [Hz] below which /diagnostics says WARN '
              '(e.g. the camera\'s rate); 0 = no rate check.', float_range=(0.0, 1000.0)),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
"""The table by name (``fusion``'s default and choices are None here: :func:`parameter_table`)."""


@functools.cache
def parameter_table() -> tuple[ParamSpec, ...]:
    """:data:`PARAMETERS` with every entry complete (reads the fusion rules: imports torch)."""
    def complete(spec: ParamSpec) -> ParamSpec:
        if spec.options_from is None:
            return spec
        default, choices = spec.options_from()
        return replace(spec, default=default, choices=choices, options_from=None)

    return tuple(complete(spec) for spec in PARAMETERS)


def complete_spec(name: str) -> ParamSpec:
    """The complete entry of one parameter (see :func:`parameter_table`)."""
    return next(spec for spec in parameter_table() if spec.name == name)


@dataclass(frozen=True)
class RuntimeSettings:
    """The dynamic parameters' values in effect (immutable; replaced as a whole on change)."""

    anchor: float
    anchors: tuple[float, ...]
    fusion: str
    anchor_mode: str
    roi: tuple[int, int, int, int]
    temporal_filter: str
    flip_tta: bool
    far_limit: float
    publish_points: bool
    points_stride: int
    points_max_range: float
    redecode_on_anchor_change: bool
    expected_rate_hz: float

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
        ValueError: With a reason naming the parameter; nothing is applied then. An anchor
            set alone while ``anchor_mode`` is auto or roi is refused: the mode would replace
            it at the next frame (send ``anchor_mode: fixed`` with it, as ``set_anchor`` does).
    """
    anchor_given = 'anchor' in changes or 'anchors' in changes
    if anchor_given and 'anchor_mode' not in changes and current.anchor_mode != 'fixed':
        raise ValueError(f'anchor_mode is {current.anchor_mode}: the node picks the anchor '
                         f'itself and would replace this one at the next frame; set '
                         f'anchor_mode to fixed first (the set_anchor service and the anchor '
                         f'topic do that and say so)')
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
        elif name == 'fusion':
            rules = complete_spec('fusion').choices
            if value not in rules:
                raise ValueError(f'fusion must be one of {", ".join(rules)}, got {value!r}')
            updates[name] = value
        elif name in ('anchor_mode', 'temporal_filter'):
            if value not in spec.choices:
                raise ValueError(f'{name} must be one of {", ".join(spec.choices)}, '
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
        elif name in ('far_limit', 'points_max_range', 'expected_rate_hz'):
            value = _number(name, value)
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f'{name} must be a finite number >= 0, got {value}')
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
    values = {name: complete_spec(name).default for name in RuntimeSettings.__dataclass_fields__}
    values['anchors'] = tuple(values['anchors'])
    values['roi'] = tuple(values['roi'])
    return RuntimeSettings(**values)


def markdown_table() -> str:
    """The README's parameter table."""
    rows = ['| Parameter | Default | Runtime | Description |', '|---|---|---|---|']
    for spec in parameter_table():
        default = repr(spec.default) if isinstance(spec.default, str) else str(spec.default)
        runtime = 'read-only' if spec.read_only else 'dynamic'
        choices = f' One of: {", ".join(spec.choices)}.' if spec.choices else ''
        rows.append(f'| `{spec.name}` | `{default}` | {runtime} | {spec.description}{choices} |')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(markdown_table())
