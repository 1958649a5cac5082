"""The network: config, encoder, anchor pool, heads and the model, on tiny shapes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from official_weights import dav2_head_reference

from metric_solver_ros.model import (
    DEFAULT_ANCHOR_POOL_M,
    ENCODER_TAPS,
    PRESETS,
    AnchorPool,
    MetricSolver,
    MetricSolverConfig,
    count_parameters,
    create_model,
    decode,
    get_config,
)


def small_config(**overrides) -> MetricSolverConfig:
    """A few-thousand-parameter network that runs in milliseconds."""
    fields = dict(preset='custom', embed_dim=32, depth=4, num_heads=2, pos_embed_grid=5,
                  taps=(0, 1, 2, 3), head_features=16, head_out_channels=(8, 16, 16, 16),
                  head_hidden=8, anchor_dim=8, input_size=(28, 42))
    fields.update(overrides)
    return MetricSolverConfig(**fields)


@pytest.fixture(scope='module')
def model() -> MetricSolver:
    torch.manual_seed(0)
    net = create_model(small_config())
    # Non-trivial weights everywhere (LayerScale starts at 1e-5, which would hide bugs).
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


# ----------------------------------------------------------------------------------- config


def test_presets_have_the_documented_sizes():
    sizes = {name: (c.embed_dim, c.num_heads, c.depth, c.head_features, c.head_out_channels)
             for name, c in PRESETS.items()}
    assert sizes['vits'] == (384, 6, 12, 64, (48, 96, 192, 384))
    assert sizes['vitb'] == (768, 12, 12, 128, (96, 192, 384, 768))
    assert sizes['vitl'] == (1024, 16, 24, 256, (256, 512, 1024, 1024))
    assert sizes['vitg'] == (1536, 24, 40, 384, (1536, 1536, 1536, 1536))
    assert PRESETS['vitg'].ffn == 'swiglu'
    for name in ('vits', 'vitb', 'vitl', 'vitg', 'tiny'):
        assert PRESETS[name].taps == ENCODER_TAPS[name]
        assert PRESETS[name].anchor_pool_m == DEFAULT_ANCHOR_POOL_M
        assert PRESETS[name].k == 0.025
    tiny = PRESETS['tiny']
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads) == (192, 12, 3)
    assert tiny.head_out_scale < 1 and all(s % 14 == 0 for s in tiny.input_size)
    assert tiny.input_size[1] > tiny.input_size[0]  # landscape, about 4:3


def test_config_dict_round_trip_through_json():
    for config in [*PRESETS.values(), small_config(anchor_pool_m=(1.0, 3.0), far_head=False)]:
        again = MetricSolverConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config


@pytest.mark.parametrize('change, message', [
    ({'input_size': (30, 42)}, 'multiples'),
    ({'taps': (0, 1, 2, 9)}, 'taps'),
    ({'taps': (3, 2, 1, 0)}, 'taps'),
    ({'num_heads': 3}, 'divisible'),
    ({'anchor_pool_m': (2.0, 1.0)}, 'increasing'),
    ({'anchor_pool_m': (0.0, 1.0)}, 'anchor'),
    ({'head_out_scale': 1.5}, 'head_out_scale'),
    ({'ffn': 'relu'}, 'ffn'),
    ({'k': -1.0}, 'k must'),
])
def test_config_rejects_invalid_values(change, message):
    with pytest.raises(ValueError, match=message):
        small_config(**change)


def test_from_dict_rejects_unknown_and_missing_keys():
    d = small_config().to_dict()
    with pytest.raises(ValueError, match='unknown'):
        MetricSolverConfig.from_dict({**d, 'dropout': 0.1})
    del d['embed_dim']
    with pytest.raises(ValueError, match='embed_dim'):
        MetricSolverConfig.from_dict(d)


def test_get_config_overrides_and_unknown_preset():
    config = get_config('vits', input_size=(364, 490), anchor_pool_m=[1, 2, 4])
    assert config.input_size == (364, 490) and config.anchor_pool_m == (1.0, 2.0, 4.0)
    assert PRESETS['vits'].input_size == (518, 518)  # presets are not modified
    with pytest.raises(ValueError, match='vitl'):
        get_config('vit_huge')
    with pytest.raises(ValueError, match='unknown'):
        get_config('vits', not_a_field=1)


# ---------------------------------------------------------------------------------- encoder


def dinov2_pos_embed_reference(pos_embed, h0, w0, offset=0.1):
    """dinov2's interpolate_pos_encoding, written out (scale_factor with the 0.1 offset)."""
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    dim = pos_embed.shape[-1]
    patch = F.interpolate(pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2),
                          scale_factor=((h0 + offset) / m, (w0 + offset) / m), mode='bicubic',
                          antialias=False)
    assert patch.shape[-2:] == (h0, w0)
    patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((pos_embed[:, :1], patch), dim=1)


@pytest.mark.parametrize('h0, w0', [(3, 4), (7, 9), (5, 5), (2, 11)])
def test_pos_embed_interpolation_matches_dinov2(model, h0, w0):
    encoder = model.pretrained
    got = encoder.interpolate_pos_encoding(h0 * w0, h0 * 14, w0 * 14)
    want = dinov2_pos_embed_reference(encoder.pos_embed, h0, w0)
    if (h0, w0) == (5, 5):  # the stored grid, square: used as is, like dinov2
        want = encoder.pos_embed
    assert got.shape == (1, 1 + h0 * w0, encoder.embed_dim)
    assert torch.allclose(got, want, atol=1e-6)
    # The resampled grid really is a resampling of the stored one (corners kept closely).
    grid = got[0, 1:].reshape(h0, w0, -1)
    stored = encoder.pos_embed[0, 1:].reshape(5, 5, -1)
    if h0 >= 5 and w0 >= 5:
        assert torch.allclose(grid[0, 0], stored[0, 0], atol=0.2)


def test_encoder_rejects_sides_that_are_not_multiples_of_14(model):
    with pytest.raises(ValueError, match='multiples of the patch size'):
        model.encode(torch.zeros(1, 3, 28, 40))


def test_intermediate_layers_and_class_tokens(model):
    x = torch.randn(2, 3, 42, 56)
    layers = model.pretrained.get_intermediate_layers(x, [1, 3], return_class_token=True)
    assert len(layers) == 2
    for patches, cls in layers:
        assert patches.shape == (2, 12, 32) and cls.shape == (2, 32)
    last = model.pretrained.get_intermediate_layers(x, 1, return_class_token=False)
    assert torch.allclose(last[0], layers[1][0])
    unnormed = model.pretrained.get_intermediate_layers(x, [3], norm=False)[0][0]
    assert not torch.allclose(unnormed, layers[1][0])


def test_swiglu_encoder_layout():
    config = small_config(ffn='swiglu', embed_dim=48, num_heads=2)
    net = create_model(config, device='meta')
    mlp = net.pretrained.blocks[0].mlp
    hidden = (int(48 * 4 * 2 / 3) + 7) // 8 * 8  # dinov2 SwiGLUFFNFused
    assert mlp.w12.weight.shape == (2 * hidden, 48) and mlp.w3.weight.shape == (48, hidden)


# ------------------------------------------------------------------------------ anchor pool


def test_anchor_pool_exact_at_pool_values_and_log_linear_between():
    torch.manual_seed(1)
    pool = AnchorPool(DEFAULT_ANCHOR_POOL_M, 6)
    values = torch.tensor(DEFAULT_ANCHOR_POOL_M)
    assert torch.equal(pool(values), pool.embeddings.detach())
    for i in range(len(DEFAULT_ANCHOR_POOL_M) - 1):
        lo, hi = DEFAULT_ANCHOR_POOL_M[i], DEFAULT_ANCHOR_POOL_M[i + 1]
        for t in (0.25, 0.5, 0.9):
            a = math.exp((1 - t) * math.log(lo) + t * math.log(hi))
            want = (1 - t) * pool.embeddings[i] + t * pool.embeddings[i + 1]
            assert torch.allclose(pool(torch.tensor([a]))[0], want, atol=1e-5), (lo, hi, t)
    # Linear in log(a), not in a: the arithmetic midpoint is not the embedding midpoint.
    mid = pool(torch.tensor([(2.0 + 4.0) / 2]))[0]
    assert not torch.allclose(mid, (pool.embeddings[2] + pool.embeddings[3]) / 2, atol=1e-4)


@pytest.mark.parametrize('bad', [0.4, 121.0, 0.0, -2.0, math.nan, math.inf])
def test_anchor_pool_rejects_out_of_range_anchors(bad):
    pool = AnchorPool(DEFAULT_ANCHOR_POOL_M, 4)
    with pytest.raises(ValueError, match=r'anchor .* outside the anchor pool range \[0.5, 120\]'):
        pool(torch.tensor([2.0, bad]))
    with pytest.raises(ValueError, match=r'\[0.5, 120\]'):
        pool.validate([bad])
    pool.validate([0.5, 3.3, 120.0])


def test_anchor_pool_values_stay_float32_when_cast():
    pool = AnchorPool((0.3, 1.7, 9.1), 4).to(torch.bfloat16)
    assert pool.anchors_m.dtype == torch.float32
    assert pool.anchors_m.tolist() == pytest.approx([0.3, 1.7, 9.1], rel=1e-7)
    assert pool.embeddings.dtype == torch.bfloat16
    assert torch.equal(pool(torch.tensor([1.7])), pool.embeddings[1:2])


def test_anchor_pool_rejects_bad_pools():
    with pytest.raises(ValueError, match='increasing'):
        AnchorPool((1.0, 1.0), 4)


# -------------------------------------------------------------------------------- the model


@pytest.mark.parametrize('hw', [(28, 42), (56, 28), (42, 70)])
def test_output_shapes_for_non_square_inputs(model, hw):
    anchors = torch.tensor([2.0, 10.0])
    out = model(torch.randn(2, 3, *hw), anchors)
    assert set(out) == {'d_sn_logit', 'mask_logit', 'd_tf_logit'}
    for value in out.values():
        assert value.shape == (2, 1, *hw) and value.dtype == torch.float32
        assert torch.isfinite(value).all()


def test_head_out_scale_sets_the_output_resolution():
    net = create_model(small_config(head_out_scale=4 / 7))
    out = net(torch.randn(1, 3, 28, 42), torch.tensor([4.0]))
    assert out['d_sn_logit'].shape == (1, 1, 16, 24)
    net = create_model(small_config(head_out_scale=0.5))
    assert net(torch.randn(1, 3, 42, 70), torch.tensor([4.0]))['d_tf_logit'].shape == \
        (1, 1, 21, 35)


def test_head_equals_the_literal_dav2_head_with_concatenated_anchor(model):
    """The per-anchor-bias projection and conv-before-upsample equal DA-V2's literal order."""
    x = torch.randn(1, 3, 42, 56)
    features = model.encode(x)
    anchors = torch.tensor([0.7, 2.0, 33.0])
    embedding = model.anchor_pool(anchors)
    out = model.decode(features, anchors, (3, 4))
    for head, key in ((model.near_head, 'd_sn_logit'), (model.far_head, 'd_tf_logit')):
        sd = {k: v for k, v in head.state_dict().items() if not k.startswith('mask_conv')}
        want = dav2_head_reference(sd, features, (3, 4), (42, 56), embedding)
        assert torch.allclose(out[key], want, atol=1e-4, rtol=1e-4), key


def test_one_image_many_anchors_equals_separate_decodes(model):
    x = torch.randn(1, 3, 28, 42)
    features = model.encode(x)
    anchors = torch.tensor([0.5, 3.0, 17.0, 120.0])
    batched = model.decode(features, anchors, (2, 3))
    for i, a in enumerate(anchors):
        single = model.decode(features, a.view(1), (2, 3))
        for key in batched:
            assert torch.allclose(batched[key][i:i + 1], single[key], atol=1e-5), key
    # Different anchors really give different outputs.
    assert not torch.allclose(batched['d_sn_logit'][0], batched['d_sn_logit'][3])


def test_forward_equals_encode_then_decode_and_per_image_anchors(model):
    x = torch.randn(2, 3, 28, 42)
    anchors = torch.tensor([1.0, 40.0])
    out = model(x, anchors)
    again = model.decode(model.encode(x), anchors, (2, 3))
    for key in out:
        assert torch.equal(out[key], again[key])
    first = model(x[:1], anchors[:1])
    assert torch.allclose(out['d_tf_logit'][:1], first['d_tf_logit'], atol=1e-5)


def test_n_anchors_per_image_equal_per_image_decodes(model):
    x = torch.randn(2, 3, 28, 42)
    features = model.encode(x)
    anchors = torch.tensor([1.0, 40.0, 3.0, 0.5])  # image 0 at 1 and 3 m, image 1 at 40 and 0.5
    out = model.decode(features, anchors, (2, 3))
    first = model.decode(features, anchors[:2], (2, 3))
    second = model.decode(features, anchors[2:], (2, 3))
    for key in out:
        assert torch.allclose(out[key], torch.cat([first[key], second[key]]), atol=1e-5), key


def test_decode_rejects_bad_batches_and_anchors(model):
    features = model.encode(torch.randn(2, 3, 28, 42))
    with pytest.raises(ValueError, match='anchors'):
        model.decode(features, torch.tensor([1.0, 2.0, 4.0]), (2, 3))
    with pytest.raises(ValueError, match='outside the anchor pool range'):
        model.decode(features, torch.tensor([1.0, 500.0]), (2, 3))


def test_ablation_variants_have_the_right_outputs():
    no_far = create_model(small_config(far_head=False))
    assert no_far.far_head is None
    out = no_far(torch.randn(1, 3, 28, 28), torch.tensor([2.0]))
    assert set(out) == {'d_sn_logit', 'mask_logit'}
    no_mask = create_model(small_config(mask_head=False))
    assert no_mask.near_head.mask_conv is None
    out = no_mask(torch.randn(1, 3, 28, 28), torch.tensor([2.0]))
    assert set(out) == {'d_sn_logit', 'd_tf_logit'}
    decoded = decode(out, torch.tensor([2.0]), no_mask.config)
    assert decoded['depth_m'].shape == (1, 1, 28, 28)


def test_bfloat16_weights_run_and_decode_in_float32(model):
    net = create_model(small_config(), dtype=torch.bfloat16)
    net.load_state_dict(model.state_dict())
    assert net.near_head.projects[0].weight.dtype == torch.bfloat16
    assert net.anchor_pool.anchors_m.dtype == torch.float32
    x = torch.randn(1, 3, 28, 42)
    out = net(x.bfloat16(), torch.tensor([3.0]))
    assert out['d_sn_logit'].dtype == torch.bfloat16
    decoded = decode(out, torch.tensor([3.0]), net.config)
    assert decoded['depth_m'].dtype == torch.float32
    reference = model(x, torch.tensor([3.0]))
    assert torch.allclose(out['d_sn_logit'].float(), reference['d_sn_logit'], atol=0.1)


def test_keys_follow_the_dinov2_and_dav2_layout():
    keys = set(create_model('vits', device='meta').state_dict())
    for key in ('pretrained.cls_token', 'pretrained.pos_embed', 'pretrained.mask_token',
                'pretrained.patch_embed.proj.weight', 'pretrained.blocks.11.attn.qkv.weight',
                'pretrained.blocks.0.ls1.gamma', 'pretrained.blocks.3.mlp.fc2.bias',
                'pretrained.norm.weight', 'near_head.projects.3.weight',
                'near_head.resize_layers.3.weight', 'near_head.scratch.layer4_rn.weight',
                'far_head.scratch.refinenet1.resConfUnit1.conv2.bias',
                'far_head.scratch.output_conv2.2.weight', 'near_head.mask_conv.weight',
                'anchor_pool.embeddings'):
        assert key in keys, key
    assert 'anchor_pool.anchors_m' not in keys  # the pool values come from the config only
    assert 'far_head.mask_conv.weight' not in keys
    assert not any('refinenet4.resConfUnit1' in k for k in keys)


def test_parameter_counts_on_meta():
    counts = {name: count_parameters(create_model(name, device='meta'))
              for name in ('vits', 'vitl', 'tiny')}
    for c in counts.values():
        assert c['total'] == c['encoder'] + c['near_head'] + c['far_head'] + c['anchor_pool']
    assert counts['vits']['encoder'] == 22_056_576  # DINOv2 ViT-S/14 incl. mask token
    assert counts['vitl']['encoder'] == 304_368_640  # DINOv2 ViT-L/14
    assert 360e6 < counts['vitl']['total'] < 370e6
    assert counts['vitl']['anchor_pool'] == 10 * 64
    assert counts['tiny']['total'] < 8e6


def test_create_model_from_name_device_and_dtype():
    net = create_model(dataclasses.replace(small_config(), anchor_dim=4), device='cpu',
                       dtype=torch.float64)
    assert not net.training
    assert net.pretrained.pos_embed.dtype == torch.float64
    assert net.anchor_pool.embeddings.shape == (10, 4)
