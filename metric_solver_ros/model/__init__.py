"""The Metric-Solver network as pure ``nn.Module``s (no ROS, no file I/O, no CLI).

``config`` (presets, constants), ``representation`` (targets, inverse maps, fusion), ``anchor``
(the anchor pool), ``dinov2`` (encoder), ``dpt`` (heads), ``metric_solver`` (the model),
``depth_anything_v2`` (Depth Anything V2 on the same encoder and head, as teachers).
"""

from .anchor import AnchorPool
from .config import (
    D_TF_EPS,
    DEFAULT_ANCHOR_POOL_M,
    ENCODER_TAPS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    K_TAPER,
    PRESETS,
    MetricSolverConfig,
    get_config,
)
from .depth_anything_v2 import (
    DAV2_PRESETS,
    DepthAnythingV2,
    DepthAnythingV2Config,
    create_depth_anything_v2,
    dav2_input_size,
)
from .dinov2 import DinoVisionTransformer
from .dpt import DPTHead
from .metric_solver import MetricSolver, count_parameters, create_model, parameter_groups
from .representation import (
    NO_MASK_NEAR_THRESHOLD,
    capped_near_target,
    decode,
    decode_fused,
    depth_to_targets,
    far_limit_m,
    far_to_depth,
    fuse_anchors,
    near_to_depth,
    soft_fused_depth,
)

__all__ = [
    'DAV2_PRESETS',
    'D_TF_EPS',
    'DEFAULT_ANCHOR_POOL_M',
    'ENCODER_TAPS',
    'IMAGENET_MEAN',
    'IMAGENET_STD',
    'K_TAPER',
    'NO_MASK_NEAR_THRESHOLD',
    'PRESETS',
    'AnchorPool',
    'DPTHead',
    'DepthAnythingV2',
    'DepthAnythingV2Config',
    'DinoVisionTransformer',
    'MetricSolver',
    'MetricSolverConfig',
    'capped_near_target',
    'count_parameters',
    'create_depth_anything_v2',
    'create_model',
    'dav2_input_size',
    'decode',
    'decode_fused',
    'depth_to_targets',
    'far_limit_m',
    'far_to_depth',
    'fuse_anchors',
    'get_config',
    'near_to_depth',
    'parameter_groups',
    'soft_fused_depth',
]
