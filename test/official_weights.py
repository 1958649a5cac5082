"""Official DINOv2 ViT-S/14 and Depth Anything V2 layouts and DA-V2's head, written out literally.

Shared by the tests of the model, of ``convert`` and of the DA-V2 models, and independent of the
model code: key names and shapes as in ``dinov2_vits14_pretrain.pth`` /
``depth_anything_v2_vits.pth``, and ``DPTHead.forward`` of ``depth_anything_v2/dpt.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Official ViT-S/14 sizes (dinov2_vits14_pretrain.pth; depth_anything_v2_vits.pth), written out
# here independently of the model code.
D, BLOCKS, MLP, GRID = 384, 12, 1536, 37
OUT = (48, 96, 192, 384)
FEATURES = 64


def official_dinov2_vits_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {'cls_token': (1, 1, D), 'pos_embed': (1, 1 + GRID * GRID, D),
              'mask_token': (1, D), 'patch_embed.proj.weight': (D, 3, 14, 14),
              'patch_embed.proj.bias': (D,), 'norm.weight': (D,), 'norm.bias': (D,)}
    for i in range(BLOCKS):
        b = f'blocks.{i}.'
        shapes.update({
            b + 'norm1.weight': (D,), b + 'norm1.bias': (D,),
            b + 'attn.qkv.weight': (3 * D, D), b + 'attn.qkv.bias': (3 * D,),
            b + 'attn.proj.weight': (D, D), b + 'attn.proj.bias': (D,),
            b + 'ls1.gamma': (D,), b + 'norm2.weight': (D,), b + 'norm2.bias': (D,),
            b + 'mlp.fc1.weight': (MLP, D), b + 'mlp.fc1.bias': (MLP,),
            b + 'mlp.fc2.weight': (D, MLP), b + 'mlp.fc2.bias': (D,), b + 'ls2.gamma': (D,),
        })
    return shapes


def official_dav2_head_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i, c in enumerate(OUT):
        shapes[f'projects.{i}.weight'] = (c, D, 1, 1)
        shapes[f'projects.{i}.bias'] = (c,)
        shapes[f'scratch.layer{i + 1}_rn.weight'] = (FEATURES, c, 3, 3)
    shapes.update({'resize_layers.0.weight': (48, 48, 4, 4), 'resize_layers.0.bias': (48,),
                   'resize_layers.1.weight': (96, 96, 2, 2), 'resize_layers.1.bias': (96,),
                   'resize_layers.3.weight': (384, 384, 3, 3), 'resize_layers.3.bias': (384,)})
    for n in (1, 2, 3, 4):
        r = f'scratch.refinenet{n}.'
        shapes[r + 'out_conv.weight'] = (FEATURES, FEATURES, 1, 1)
        shapes[r + 'out_conv.bias'] = (FEATURES,)
        for unit in ('resConfUnit1', 'resConfUnit2'):  # DA-V2 builds both, also in refinenet4
            for conv in ('conv1', 'conv2'):
                shapes[f'{r}{unit}.{conv}.weight'] = (FEATURES, FEATURES, 3, 3)
                shapes[f'{r}{unit}.{conv}.bias'] = (FEATURES,)
    shapes.update({
        'scratch.output_conv1.weight': (32, FEATURES, 3, 3), 'scratch.output_conv1.bias': (32,),
        'scratch.output_conv2.0.weight': (32, 32, 3, 3), 'scratch.output_conv2.0.bias': (32,),
        'scratch.output_conv2.2.weight': (1, 32, 1, 1), 'scratch.output_conv2.2.bias': (1,),
    })
    return shapes


def random_state(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def dav2_vits_state(encoder_seed: int, head_seed: int) -> dict[str, torch.Tensor]:
    """A random ``depth_anything_v2_vits.pth`` state dict (``pretrained.*``, ``depth_head.*``)."""
    state = {f'pretrained.{k}': v
             for k, v in random_state(official_dinov2_vits_shapes(), encoder_seed).items()}
    state.update({f'depth_head.{k}': v
                  for k, v in random_state(official_dav2_head_shapes(), head_seed).items()})
    return state


def dav2_head_reference(sd, features, patch_hw, out_hw, embedding=None):
    """Depth Anything V2's DPTHead.forward written out literally, without the final ReLU.

    ``sd`` holds DA-V2 ``depth_head`` keys (no prefix). With ``embedding`` [A, E] the anchor
    embedding is concatenated channel-wise to each tapped map before ``projects`` (the paper).
    Fusion blocks upsample THEN apply out_conv, as DA-V2 does.
    """
    ph, pw = patch_hw
    layers = []
    for i, (tokens, _) in enumerate(features):
        x = tokens.permute(0, 2, 1).reshape(tokens.shape[0], tokens.shape[-1], ph, pw)
        if embedding is not None:
            x = x.expand(embedding.shape[0], -1, -1, -1) if x.shape[0] == 1 else x
            x = torch.cat([x, embedding[:, :, None, None].expand(-1, -1, ph, pw)], dim=1)
        x = F.conv2d(x, sd[f'projects.{i}.weight'], sd[f'projects.{i}.bias'])
        if i in (0, 1):
            x = F.conv_transpose2d(x, sd[f'resize_layers.{i}.weight'],
                                   sd[f'resize_layers.{i}.bias'], stride=4 if i == 0 else 2)
        elif i == 3:
            x = F.conv2d(x, sd['resize_layers.3.weight'], sd['resize_layers.3.bias'], stride=2,
                         padding=1)
        layers.append(x)
    rn = [F.conv2d(layers[i], sd[f'scratch.layer{i + 1}_rn.weight'], padding=1)
          for i in range(4)]

    def rcu(x, p):
        out = F.conv2d(F.relu(x), sd[p + 'conv1.weight'], sd[p + 'conv1.bias'], padding=1)
        out = F.conv2d(F.relu(out), sd[p + 'conv2.weight'], sd[p + 'conv2.bias'], padding=1)
        return out + x

    def fusion(n, x, skip=None, size=None):
        p = f'scratch.refinenet{n}.'
        if skip is not None:
            x = x + rcu(skip, p + 'resConfUnit1.')
        x = rcu(x, p + 'resConfUnit2.')
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=True)
        return F.conv2d(x, sd[p + 'out_conv.weight'], sd[p + 'out_conv.bias'])

    path = fusion(4, rn[3], size=rn[2].shape[2:])
    path = fusion(3, path, rn[2], size=rn[1].shape[2:])
    path = fusion(2, path, rn[1], size=rn[0].shape[2:])
    path = fusion(1, path, rn[0])
    out = F.conv2d(path, sd['scratch.output_conv1.weight'], sd['scratch.output_conv1.bias'],
                   padding=1)
    out = F.interpolate(out, size=out_hw, mode='bilinear', align_corners=True)
    out = F.relu(F.conv2d(out, sd['scratch.output_conv2.0.weight'],
                          sd['scratch.output_conv2.0.bias'], padding=1))
    return F.conv2d(out, sd['scratch.output_conv2.2.weight'], sd['scratch.output_conv2.2.bias'])
