"""torch ``Dataset``s for training: the synthetic world on the fly, on-disk sources, mixtures.

Every item is a dict of tensors:

- ``'image'``: float32 [3, H, W] RGB in [0, 1] (not normalised: the model config owns that);
- ``'depth_m'``: float32 [1, H, W] planar depth [m]; 0 / NaN invalid, +inf sky;
- ``'intrinsics'``: float32 [4] (fx, fy, cx, cy) [px] at H x W (NaN when the source has none);
- ``'scene'``: int64 scalar, 0 unknown, 1 indoor, 2 outdoor.

Output sizes are fixed per dataset and must be multiples of 14 (ViT patches). Items depend only
on (dataset seed, epoch, index): no global state, so they are reproducible under DataLoader
workers and ``DistributedSampler``. Call ``set_epoch`` (like ``DistributedSampler.set_epoch``) to
draw new augmentations each epoch; with ``persistent_workers=True`` workers keep the epoch they
started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from metric_solver_ros.data.augment import PATCH_PX, AugmentConfig, augment, fit_to_size
from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic import (
    PackedScenes,
    SceneSpec,
    pack_scenes,
    render_specs,
    scene_spec,
)

SCENE_CODE = {'': 0, 'indoor': 1, 'outdoor': 2}
"""``Sample.scene`` -> the ``'scene'`` code of dataset items."""


class SampleSource(Protocol):
    """Anything indexable that yields ``Sample``s (``RGBDFolder``, ``Hypersim``, ``VKITTI2``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = (int(x) for x in size)
    if h <= 0 or w <= 0 or h % PATCH_PX or w % PATCH_PX:
        raise ValueError(f'size must be positive multiples of {PATCH_PX}, got {size}')
    return h, w


def sample_to_item(sample: Sample) -> dict[str, torch.Tensor]:
    """Convert a ``Sample`` to the dict-of-tensors item format (see module docstring)."""
    k = sample.intrinsics if sample.intrinsics is not None else (float('nan'),) * 4
    return {
        'image': torch.from_numpy(np.ascontiguousarray(sample.image)).permute(2, 0, 1).float()
        / 255.0,
        'depth_m': torch.from_numpy(np.ascontiguousarray(sample.depth_m, np.float32))[None],
        'intrinsics': torch.tensor(k, dtype=torch.float32),
        'scene': torch.tensor(SCENE_CODE.get(sample.scene, 0), dtype=torch.long),
    }


def _mix(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) & 0xFFFFFFFFFFFFFFFF for w in words])


class SyntheticDataset(Dataset):
    """Procedural scenes rendered on the fly (see ``synthetic/``).

    Item ``i`` is scene ``scene_seed(i)`` of kind ``kind_of(i)``; it depends only on
    (``seed``, ``i``), never on the epoch (the world is infinite: use a large ``length`` or a new
    ``seed`` for fresh scenes).

    Args:
        kind: ``'indoor'``, ``'outdoor'`` or ``'mixed'`` (each item picks one).
        size: Output (H, W) [px], multiples of 14.
        length: Number of items.
        seed: Dataset seed.
        indoor_fraction: Share of indoor items when ``kind == 'mixed'``.
    """

    def __init__(
        self,
        kind: str = 'mixed',
        size: tuple[int, int] = (224, 224),
        length: int = 100_000,
        seed: int = 0,
        indoor_fraction: float = 0.5,
    ) -> None:
        if kind not in ('indoor', 'outdoor', 'mixed'):
            raise ValueError(f"kind must be 'indoor', 'outdoor' or 'mixed', got {kind!r}")
        if length < 1:
            raise ValueError(f'length must be >= 1, got {length}')
        self.kind = kind
        self.size = _check_size(size)
        self.length = int(length)
        self.seed = int(seed)
        self.indoor_fraction = float(indoor_fraction)

    def __len__(self) -> int:
        return self.length

    def _draw(self, index: int) -> tuple[str, int]:
        if not 0 <= index < self.length:
            raise IndexError(f'index {index} out of range [0, {self.length})')
        rng = _mix(self.seed, index, 0x5A7)
        scene_seed = int(rng.integers(0, 2**62))
        if self.kind != 'mixed':
            return self.kind, scene_seed
        return ('indoor' if rng.random() < self.indoor_fraction else 'outdoor'), scene_seed

    def kind_of(self, index: int) -> str:
        """Scene kind of item ``index``."""
        return self._draw(index)[0]

    def scene_seed(self, index: int) -> int:
        """Scene seed of item ``index`` (for ``synthetic.render_scene``)."""
        return self._draw(index)[1]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.batch([index], 'cpu')
        return {key: value[0] for key, value in batch.items()}

    def batch(
        self, indices: Sequence[int], device: torch.device | str = 'cpu'
    ) -> dict[str, torch.Tensor]:
        """Render several items at once on ``device`` (e.g. directly on the training GPU).

        Args:
            indices: Item indices.
            device: Torch device.

        Returns:
            The items stacked along a leading batch dimension (same keys and units as
            ``__getitem__``), on ``device``.
        """
        return self.render(self.specs(indices), device)

    def specs(self, indices: Sequence[int]) -> list[SceneSpec]:
        """The scene layouts of several items (numpy on the host: the CPU half of :meth:`batch`)."""
        return [scene_spec(*self._draw(int(i))) for i in indices]

    def pack(self, specs: Sequence[SceneSpec]) -> PackedScenes:
        """:meth:`specs` packed into arrays at this dataset's size.

        Cheap to send between processes; :meth:`render` takes either form.
        """
        return pack_scenes(specs, self.size[0], self.size[1])

    def render(self, specs: Sequence[SceneSpec] | PackedScenes,
               device: torch.device | str = 'cpu') -> dict[str, torch.Tensor]:
        """Render :meth:`specs` or their :meth:`pack` on ``device``.

        The device half of :meth:`batch` (same output).
        """
        out = render_specs(specs, self.size[0], self.size[1], device)
        kinds = specs.kinds if isinstance(specs, PackedScenes) else [s.kind for s in specs]
        codes = [SCENE_CODE[kind] for kind in kinds]
        return {
            'image': out['image'].float() / 255.0,
            'depth_m': out['depth_m'],
            'intrinsics': out['intrinsics'],
            'scene': torch.tensor(codes, dtype=torch.long, device=out['image'].device),
        }


class FolderDataset(Dataset):
    """Samples from an on-disk source, brought to a fixed size with metric-safe augmentation.

    Args:
        source: ``RGBDFolder``, ``Hypersim``, ``VKITTI2`` or anything yielding ``Sample``s.
        size: Output (H, W) [px], multiples of 14.
        augment: Random zoom/crop/flip/colour jitter; if False, resize to cover + centre crop.
        seed: Dataset seed (augmentation randomness is a function of seed, epoch, index).
        config: Augmentation settings.
    """

    def __init__(
        self,
        source: SampleSource,
        size: tuple[int, int] = (224, 224),
        augment: bool = True,
        seed: int = 0,
        config: AugmentConfig | None = None,
    ) -> None:
        self.source = source
        self.size = _check_size(size)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.config = config or AugmentConfig()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range [0, {len(self)})')
        sample = self.source[index]
        h, w = self.size
        if self.augment:
            rng = _mix(self.seed, self.epoch, index, 0xA06)
            sample = augment(sample, h, w, rng, self.config)
        else:
            sample = fit_to_size(sample, h, w)
        return sample_to_item(sample)


class MixedDataset(Dataset):
    """Draw items from several datasets with given weights.

    Item ``i`` picks dataset ``j`` with probability ``weights[j] / sum(weights)`` and a uniformly
    random item of it, both from (``seed``, epoch, ``i``). All datasets must return the same
    output size.

    Args:
        datasets: The datasets to mix.
        weights: Non-negative sampling weights (one per dataset).
        length: Number of items per epoch.
        seed: Mixing seed.
    """

    def __init__(
        self,
        datasets: Sequence[Dataset],
        weights: Sequence[float],
        length: int,
        seed: int = 0,
    ) -> None:
        if len(datasets) == 0 or len(datasets) != len(weights):
            raise ValueError('need one weight per dataset and at least one dataset')
        w = np.asarray(weights, np.float64)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f'weights must be >= 0 with a positive sum, got {list(weights)}')
        for ds in datasets:
            if len(ds) == 0:  # type: ignore[arg-type]
                raise ValueError('cannot mix an empty dataset')
        self.datasets = list(datasets)
        self.probs = w / w.sum()
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch`` here and in every mixed dataset that has one."""
        self.epoch = int(epoch)
        for ds in self.datasets:
            if hasattr(ds, 'set_epoch'):
                ds.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """(dataset number, item index) that item ``index`` comes from."""
        if not 0 <= index < self.length:
            raise IndexError(f'index {index} out of range [0, {self.length})')
        rng = _mix(self.seed, self.epoch, index, 0x313)
        j = int(rng.choice(len(self.datasets), p=self.probs))
        return j, int(rng.integers(0, len(self.datasets[j])))  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        j, k = self.locate(index)
        return self.datasets[j][k]
