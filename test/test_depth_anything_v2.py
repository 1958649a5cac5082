"""Depth Anything V2 (relative and metric) built on our modules, loaded strictly from files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from official_weights import (
    D,
    dav2_head_reference,
    dav2_vits_state,
    official_dav2_head_shapes,
    official_dinov2_vits_shapes,
)

from metric_solver_ros.checkpoint import (
    CheckpointError,
    depth_anything_v2_from_state_dict,
    infer_depth_anything_v2_preset,
    load_depth_anything_v2,
)
from metric_solver_ros.engine import network_input_size
from metric_solver_ros.model import (
    DAV2_PRESETS,
    DepthAnythingV2Config,
    create_depth_anything_v2,
    dav2_input_size,
)

TAPS = (2, 5, 8, 11)  # DA-V2's intermediate_layer_idx['vits']
MAX_DEPTH_M = 20.0  # the Hypersim metric models' max_depth
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DA-V2's NormalizeImage


@pytest.fixture(scope='module')
def dav2_file(tmp_path_factory):
    state = dav2_vits_state(encoder_seed=4, head_seed=5)
    path = tmp_path_factory.mktemp('official') / 'depth_anything_v2_vits.pth'
    torch.save(state, path)
    return path, state


@pytest.fixture(scope='module')
def metric_model(dav2_file):
    return depth_anything_v2_from_state_dict(dav2_file[1], max_depth_m=MAX_DEPTH_M)


def test_keys_and_shapes_equal_the_official_files():
    model = create_depth_anything_v2('vits', device='meta')
    want = {f'pretrained.{k}': s for k, s in official_dinov2_vits_shapes().items()}
    want.update({f'depth_head.{k}': s for k, s in official_dav2_head_shapes().items()})
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want
    # The larger encoders: DA-V2's published sizes (97.5 M, 335.3 M, 1.3 B parameters).
    millions = {p: sum(v.numel() for v in create_depth_anything_v2(p, device='meta')
                       .state_dict().values()) / 1e6 for p in ('vitb', 'vitl', 'vitg')}
    assert (round(millions['vitb'], 1), round(millions['vitl'], 1),
            round(millions['vitg'] / 1e3, 1)) == (97.5, 335.3, 1.3)


@pytest.mark.parametrize('max_depth_m', [None, MAX_DEPTH_M])
def test_a_loaded_file_equals_the_literal_dav2_model(dav2_file, max_depth_m):
    path, state = dav2_file
    model = load_depth_anything_v2(path, max_depth_m=max_depth_m)
    assert model.config.preset == 'vits' and not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    head = {k[len('depth_head.'):]: v for k, v in state.items() if k.startswith('depth_head.')}
    x = torch.randn(2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        features = model.pretrained.get_intermediate_layers(x, TAPS, return_class_token=True)
        logit = dav2_head_reference(head, features, (2, 3), (28, 42))
    if max_depth_m is None:
        key, want = 'relative', F.relu(logit)  # DA-V2's final ReLU
    else:
        key, want = 'depth_m', torch.sigmoid(logit) * max_depth_m  # metric_depth's head
    assert set(out) == {key}
    assert out[key].shape == (2, 1, 28, 42) and out[key].dtype == torch.float32
    assert (want > 0).any() and want.std() > 0
    assert torch.allclose(out[key], want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_missing_keys_are_refused_by_name_then_counted(dav2_file, tmp_path):
    _, state = dav2_file
    partial = {k: v for k, v in state.items() if not k.startswith('pretrained.blocks.11.')}
    path = tmp_path / 'truncated.pth'
    torch.save(partial, path)
    with pytest.raises(CheckpointError) as info:
        load_depth_anything_v2(path)
    message = str(info.value)
    assert message.startswith(f'{path}: weights do not match a Depth Anything V2 \'vits\' model')
    assert '14 missing keys: pretrained.blocks.11.attn.proj.bias' in message
    assert '(6 more)' in message and 'unexpected' not in message
    # Strict even for the refinenet4 unit DA-V2 never calls: the file is not DA-V2's.
    unused = 'depth_head.scratch.refinenet4.resConfUnit1.conv1.weight'
    with pytest.raises(CheckpointError, match=rf'1 missing keys: {unused}$'):
        depth_anything_v2_from_state_dict({k: v for k, v in state.items() if k != unused})


def test_unexpected_and_misshaped_keys_are_refused_by_name(dav2_file):
    _, state = dav2_file
    readout = 'depth_head.readout_projects.0.0.weight'  # a use_clstoken head
    with pytest.raises(CheckpointError,
                       match=rf'1 unexpected keys: {readout} \(a use_clstoken head'):
        depth_anything_v2_from_state_dict({**state, readout: torch.zeros(D, 2 * D)})
    conditioned = torch.zeros(48, D + 64, 1, 1)  # one of our anchor-conditioned heads' shapes
    with pytest.raises(CheckpointError, match=r'1 keys with wrong shapes: depth_head\.projects\.0'
                       r'\.weight \(file \[48, 448, 1, 1\], model \[48, 384, 1, 1\]\)'):
        depth_anything_v2_from_state_dict({**state, 'depth_head.projects.0.weight': conditioned})
    with pytest.raises(CheckpointError, match=r"'vitb' model: .* keys with wrong shapes"):
        depth_anything_v2_from_state_dict(state, preset='vitb')


def test_the_preset_is_told_from_the_shapes():
    for preset in DAV2_PRESETS:
        state = create_depth_anything_v2(preset, device='meta').state_dict()
        assert infer_depth_anything_v2_preset(state) == preset
    tiny = {'pretrained.cls_token': torch.zeros(1, 1, 192), 'pretrained.blocks.11.norm1.bias':
            torch.zeros(192)}
    with pytest.raises(CheckpointError, match='token width 192 and 12 blocks matches no preset'):
        infer_depth_anything_v2_preset(tiny)
    with pytest.raises(CheckpointError, match='no pretrained.cls_token'):
        depth_anything_v2_from_state_dict({'depth_head.projects.0.bias': torch.zeros(48)},
                                          source='head_only.pth')


def test_a_custom_size_file_loads_as_itself_and_a_truncated_preset_file_is_refused(dav2_file):
    config = DepthAnythingV2Config(preset='custom', embed_dim=128, depth=4, features=16,
                                   out_channels=(8, 16, 24, 32), max_depth_m=MAX_DEPTH_M)
    model = create_depth_anything_v2(config)
    assert model.pretrained.blocks[0].attn.num_heads == 2  # 64 channels per head, as DINOv2
    loaded = depth_anything_v2_from_state_dict(model.state_dict(), max_depth_m=MAX_DEPTH_M)
    assert loaded.config == config and model.taps == loaded.taps == (0, 1, 2, 3)
    x = torch.randn(1, 3, 28, 42)
    assert torch.equal(loaded(x)['depth_m'], model(x)['depth_m'])
    _, state = dav2_file  # a vits file without its last blocks is vits, missing keys
    truncated = {k: v for k, v in state.items() if not k.startswith('pretrained.blocks.11.')}
    with pytest.raises(CheckpointError, match='missing keys'):
        depth_anything_v2_from_state_dict(truncated)
    for bad in ({'embed_dim': 96}, {'embed_dim': None}):
        with pytest.raises(ValueError, match='embed_dim'):
            DepthAnythingV2Config(**{'preset': 'custom', 'embed_dim': 128, 'depth': 4,
                                     'features': 16, 'out_channels': (8, 16, 24, 32), **bad})
    with pytest.raises(ValueError, match='use preset custom'):
        DepthAnythingV2Config(preset='vits', depth=4)


def test_a_register_file_gets_the_register_encoder(dav2_file):
    _, state = dav2_file
    tokens = torch.randn(1, 4, D)
    model = depth_anything_v2_from_state_dict({**state, 'pretrained.register_tokens': tokens})
    config = model.config
    assert (config.num_register_tokens, config.interpolate_offset,
            config.interpolate_antialias) == (4, 0.0, True)
    assert torch.equal(model.pretrained.register_tokens, tokens)
    assert model(torch.zeros(1, 3, 28, 28))['relative'].shape == (1, 1, 28, 28)


def test_infer_gives_bounded_metric_depth_at_the_image_size(metric_model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)
    image.flags.writeable = False  # as a ROS message's buffer
    depth_m = metric_model.infer(image, input_size=28)  # network input 28 x 42
    assert depth_m.shape == (30, 45) and depth_m.dtype == torch.float32
    assert torch.isfinite(depth_m).all() and (depth_m > 0).all()
    assert (depth_m <= MAX_DEPTH_M).all() and depth_m.std() > 0
    pixels = torch.from_numpy(image.copy())
    assert torch.equal(metric_model.infer(pixels, input_size=28), depth_m)
    batch = metric_model.infer(torch.stack([pixels, pixels.flip(1)]), input_size=28)
    assert batch.shape == (2, 30, 45) and torch.allclose(batch[0], depth_m, atol=1e-5)
    with pytest.raises(ValueError, match='RGB uint8'):
        metric_model.infer(image.astype(np.float32))


def dav2_infer_image_reference(model, rgb, input_size):
    """DA-V2's ``infer_image`` written out (its ``Resize`` rule and transforms), on RGB input."""
    h, w = rgb.shape[:2]
    scale = max(input_size / h, input_size / w)  # keep_aspect_ratio, resize_method lower_bound

    def constrain(x):  # ensure_multiple_of=14, min_val=input_size
        y = int(np.round(x / 14) * 14)
        return y if y >= input_size else int(np.ceil(x / 14) * 14)

    image = cv2.resize(rgb / 255.0, (constrain(scale * w), constrain(scale * h)),
                       interpolation=cv2.INTER_CUBIC)
    image = (image - MEAN) / STD
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None]
    with torch.no_grad():
        depth = model(x)['depth_m'][:, 0]
    return F.interpolate(depth[:, None], (h, w), mode='bilinear', align_corners=True)[0, 0]


def test_infer_matches_dav2s_infer_image(metric_model):
    image = np.random.default_rng(1).integers(0, 256, (40, 57, 3), dtype=np.uint8)
    want = dav2_infer_image_reference(metric_model, image, 30)  # network input 42 x 56
    got = metric_model.infer(image, input_size=30)
    # torch's bicubic and OpenCV's differ by up to ~1e-4 of the [0, 1] input range.
    assert torch.allclose(got, want, atol=1e-4)
    bgr = metric_model.infer(image[..., ::-1].copy(), input_size=30)
    assert (got - bgr).abs().max() > 1e-2  # the channel order matters: RGB in


def test_dav2_input_size_follows_dav2s_lower_bound_resize():
    assert dav2_input_size((480, 640)) == (518, 686)
    assert dav2_input_size((640, 480)) == (686, 518)
    assert dav2_input_size((100, 100), 28) == (28, 28)
    # 510 / 14 rounds down to 504 < 510: DA-V2 rounds up instead.
    assert dav2_input_size((100, 200), 510) == (518, 1022)
    for image_hw in ((480, 640), (375, 1242), (720, 405)):
        assert dav2_input_size(image_hw, 518) == network_input_size(image_hw, 518, 14)


def test_config_and_factory_validate():
    assert DepthAnythingV2Config(preset='vitl').out_channels == (256, 512, 1024, 1024)
    assert DepthAnythingV2Config(preset='vits', max_depth_m=80).max_depth_m == 80.0
    for bad in (0.0, -1.0, float('nan'), float('inf'), True):
        with pytest.raises(ValueError, match='max_depth_m'):
            DepthAnythingV2Config(preset='vits', max_depth_m=bad)
    with pytest.raises(ValueError, match='preset .tiny.'):
        DepthAnythingV2Config(preset='tiny')
    with pytest.raises(ValueError, match='head_features = features'):
        DepthAnythingV2Config(preset='vits', features=1)
    with pytest.raises(ValueError, match='one or the other'):
        create_depth_anything_v2(DepthAnythingV2Config(preset='vits'), max_depth_m=20.0)
    model = create_depth_anything_v2('vits', MAX_DEPTH_M, device='meta', dtype=torch.bfloat16)
    assert model.config.is_metric and model.depth_head.projects[0].weight.dtype == torch.bfloat16


def test_a_dav2_head_takes_no_anchor_embedding(metric_model):
    features = metric_model.pretrained.get_intermediate_layers(torch.zeros(1, 3, 28, 28), TAPS)
    with pytest.raises(ValueError, match='takes None'):
        metric_model.depth_head(features, torch.zeros(1, 64), (2, 2), (28, 28))
