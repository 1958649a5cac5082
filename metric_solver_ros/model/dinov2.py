"""A DINOv2 vision transformer, state-dict compatible with the official checkpoints.

Keys match ``dinov2_vit{s,b,l,g}14_pretrain.pth`` (``block_chunks=0``) and Depth Anything V2's
``pretrained.*``: ``cls_token``, ``pos_embed`` [1, 1 + 37 * 37, D], ``register_tokens`` (if any),
``mask_token``, ``patch_embed.proj``, ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
mlp.fc1, mlp.fc2 | mlp.w12, mlp.w3, ls2.gamma}``, ``norm``. Attention runs through
``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MetricSolverConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: ``proj`` is a ``patch x patch`` stride-``patch`` conv."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Map images [B, 3, H, W] to tokens [B, (H / p) * (W / p), D]."""
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention (``qkv``, ``proj``) through scaled_dot_product_attention."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over tokens [B, N, D]."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the FFN to tokens [B, N, D]."""
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2's ``SwiGLUFFNFused``: ``w12`` -> silu(x1) * x2 -> ``w3`` (hidden rounded to 8)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the FFN to tokens [B, N, D]."""
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    """Per-channel scale ``gamma``."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        """Scale tokens [B, N, D] channel-wise."""
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, ffn: str,
                 layerscale_init: float | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = SwiGLUFFN(dim, hidden) if ffn == 'swiglu' else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block to tokens [B, N, D]."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """The DINOv2 ViT encoder (no classification head).

    Args:
        config: Uses ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``ffn``,
            ``patch_size``, ``pos_embed_grid``, ``num_register_tokens``, ``layerscale_init``.
    """

    def __init__(self, config: MetricSolverConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.embed_dim = dim
        self.patch_size = config.patch_size
        self.num_register_tokens = config.num_register_tokens
        self.interpolate_offset = config.interpolate_offset
        self.interpolate_antialias = config.interpolate_antialias
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + config.pos_embed_grid ** 2, dim))
        self.register_tokens = (nn.Parameter(torch.zeros(1, config.num_register_tokens, dim))
                                if config.num_register_tokens else None)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads, config.mlp_ratio, config.ffn, config.layerscale_init)
            for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused; kept for checkpoint keys
        if not self.pos_embed.is_meta:  # nothing to initialise on 'meta' (and slow to trace)
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """DINOv2's initialisation: truncated normal (std 0.02) for linears and pos_embed."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, num_patches: int, height_px: int, width_px: int) -> Tensor:
        """Return positional embeddings [1, 1 + N, D] for an input of ``height x width`` px.

        Bicubic resampling of the stored square grid with DINOv2's offset (``interpolate_offset``,
        0.1) as ``dinov2``'s ``interpolate_pos_encoding``, computed in float32.
        """
        stored = self.pos_embed.shape[1] - 1
        if num_patches == stored and height_px == width_px:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        class_pos = pos_embed[:, :1]
        patch_pos = pos_embed[:, 1:]
        dim = pos_embed.shape[-1]
        grid = int(math.sqrt(stored))
        h0 = height_px // self.patch_size
        w0 = width_px // self.patch_size
        grid_in = patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = ((h0 + self.interpolate_offset) / grid, (w0 + self.interpolate_offset) / grid)
            patch_pos = F.interpolate(grid_in, scale_factor=scale, mode='bicubic',
                                      antialias=self.interpolate_antialias)
        else:
            patch_pos = F.interpolate(grid_in, size=(h0, w0), mode='bicubic',
                                      antialias=self.interpolate_antialias)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h0 * w0, dim)
        return torch.cat((class_pos, patch_pos), dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] -> tokens [B, 1 + R + N, D] (class, registers, patches)."""
        _, _, height, width = x.shape
        if not torch.jit.is_tracing() and (height % self.patch_size or width % self.patch_size):
            raise ValueError(f'input {height}x{width} px: both sides must be multiples of the '
                             f'patch size {self.patch_size} px')
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        pos_embed = self.interpolate_pos_encoding(tokens.shape[1] - 1, height, width)
        tokens = tokens + pos_embed.to(tokens.dtype)
        if self.register_tokens is not None:
            tokens = torch.cat((tokens[:, :1],
                                self.register_tokens.expand(tokens.shape[0], -1, -1),
                                tokens[:, 1:]), dim=1)
        return tokens

    def get_intermediate_layers(self, x: Tensor, n: int | Sequence[int] = 1,
                                return_class_token: bool = True, norm: bool = True
                                ) -> tuple[tuple[Tensor, Tensor], ...] | tuple[Tensor, ...]:
        """Return the outputs of blocks ``n`` (indices, or the last ``n`` blocks if an int).

        Blocks after the last requested one are not run.

        Args:
            x: Normalised images [B, 3, H, W], H and W multiples of the patch size.
            n: Block indices (0-based) or a count of final blocks.
            return_class_token: Pair every output with its class token.
            norm: Apply the final LayerNorm to each output (as DINOv2 / DA-V2).

        Returns:
            Per requested block, ``(patch_tokens [B, N, D], class_token [B, D])``, or only the
            patch tokens if ``return_class_token`` is False.
        """
        depth = len(self.blocks)
        take = list(range(depth - n, depth)) if isinstance(n, int) else [int(i) for i in n]
        if not take or min(take) < 0 or max(take) >= depth:
            raise ValueError(f'requested blocks {take} outside [0, {depth - 1}]')
        wanted = set(take)
        tokens = self.prepare_tokens(x)
        outputs: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks[:max(take) + 1]):
            tokens = block(tokens)
            if i in wanted:
                outputs[i] = tokens
        selected = [outputs[i] for i in take]
        if norm:
            selected = [self.norm(out) for out in selected]
        first_patch = 1 + self.num_register_tokens
        patches = [out[:, first_patch:] for out in selected]
        if return_class_token:
            return tuple((p, out[:, 0]) for p, out in zip(patches, selected, strict=True))
        return tuple(patches)
