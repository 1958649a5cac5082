"""The training data: the resumable batch stream over the configured sources, the eval scenes.

``train_batches`` is an endless stream that a resumed run continues exactly where it stopped
(:class:`StepBatchSampler`); pure synthetic data is rendered on the training device, scene
layouts optionally in worker processes. ``eval_frames`` renders the held-out evaluation scenes
(``EVAL_SEED``, never a training seed) of the protocol ``EVAL_SETS``. The sources:
``docs/TRAINING.md``, ``metric_solver_ros.data``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from metric_solver_ros.train_config import TrainConfig


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Infinite, resumable batches of ``(epoch, index)``, sharded over DDP ranks.

    Local batch ``j`` of rank ``r`` is global batch ``g = j * world + r``, made of the sample
    positions ``g * B .. g * B + B - 1`` of one endless stream that walks through the dataset
    epoch after epoch (in a per-epoch random permutation when ``shuffle``). So the batches of all
    ranks are disjoint, and a run restarted at local batch ``start`` sees exactly the data an
    uninterrupted run would have.

    Args:
        length: Dataset length (items per epoch).
        batch_size: Items per batch.
        rank: This process's rank.
        world: Number of processes.
        seed: Seed of the permutations.
        shuffle: Permute each epoch (False: the identity, e.g. for the synthetic world whose
            items are random already).
        start: First local batch to yield.
    """

    def __init__(self, length: int, batch_size: int, rank: int, world: int, seed: int,
                 shuffle: bool, start: int = 0) -> None:
        self.length, self.batch_size, self.rank, self.world = length, batch_size, rank, world
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self._perm: tuple[int, torch.Tensor] | None = None

    def _index(self, epoch: int, k: int) -> int:
        if not self.shuffle:
            return k
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.length, generator=g))
        return int(self._perm[1][k])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        j = self.start
        while True:
            g = j * self.world + self.rank
            batch = []
            for pos in range(g * self.batch_size, (g + 1) * self.batch_size):
                epoch, k = divmod(pos, self.length)
                batch.append((epoch, self._index(epoch, k)))
            yield batch
            j += 1


class EpochIndexed(Dataset):
    """Index a dataset with ``(epoch, index)``: sets the epoch (augmentation draw) per item."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        if hasattr(self.dataset, 'set_epoch') and getattr(self.dataset, 'epoch', None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class _SceneLayouts(Dataset):
    """A synthetic dataset's scene layouts, indexed ``(epoch, index)`` (for ``scene_workers``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.dataset.specs([key[1]])[0]

    def __len__(self) -> int:
        return len(self.dataset)


SYNTHETIC_LENGTH = 2**40  # "infinite": every training item is a new scene
MIX_LENGTH = 100_000  # items per epoch of a mixture (each item draws its source at random)


def _source_dataset(spec: dict[str, Any], cfg: TrainConfig, seed: int) -> Dataset:
    """Build one training dataset from a ``data`` entry (see ``TrainConfig.data``)."""
    from metric_solver_ros.data.augment import AugmentConfig
    from metric_solver_ros.data.datasets import FolderDataset, SyntheticDataset

    options = {k: v for k, v in spec.items() if k not in ('source', 'weight')}
    if spec['source'] == 'synthetic':
        return SyntheticDataset(kind=options.pop('kind', 'mixed'), size=cfg.image_size,
                                length=int(options.pop('length', SYNTHETIC_LENGTH)), seed=seed,
                                **options)
    module_name, class_name = {
        'rgbd_folder': ('rgbd_folder', 'RGBDFolder'),
        'hypersim': ('hypersim', 'Hypersim'),
        'vkitti2': ('vkitti2', 'VKITTI2'),
        'rosbag': ('rosbag', 'BagRGBD'),
    }[spec['source']]
    if spec['source'] == 'rosbag':  # decoded at the training resolution (sparse GT kept whole)
        options.setdefault('short_side_px', min(cfg.image_size))
    module = importlib.import_module(f'metric_solver_ros.data.{module_name}')
    reader = getattr(module, class_name)(**options)
    augment_config = AugmentConfig(scale_range=cfg.augment_scale_range)
    return FolderDataset(reader, size=cfg.image_size, augment=cfg.augment, seed=seed,
                         config=augment_config)


def build_train_dataset(cfg: TrainConfig) -> tuple[Dataset, bool]:
    """Return the training dataset and whether its order should be shuffled per epoch."""
    from metric_solver_ros.data.datasets import MixedDataset

    datasets = [_source_dataset(spec, cfg, cfg.seed + 17 * i) for i, spec in enumerate(cfg.data)]
    if len(datasets) == 1:
        only = cfg.data[0]['source'] == 'synthetic'
        return datasets[0], not only
    weights = [float(spec.get('weight', 1.0)) for spec in cfg.data]
    return MixedDataset(datasets, weights, length=MIX_LENGTH, seed=cfg.seed), False


def train_batches(cfg: TrainConfig, rank: int, world: int, device: torch.device,
                  start: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless training batches (``image`` [B,3,H,W] in [0, 1], ``depth_m`` [B,1,H,W]).

    Starts at local batch ``start`` (``step * grad_accum_steps`` on resume). Pure synthetic
    data with ``num_workers: 0`` is rendered directly on ``device`` (the GPU when training on
    one); everything else goes through a DataLoader with ``num_workers`` worker processes.
    """
    dataset, shuffle = build_train_dataset(cfg)
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, rank, world,  # type: ignore[arg-type]
                               cfg.seed, shuffle, start)
    if cfg.num_workers == 0 and hasattr(dataset, 'batch'):  # render on the training device
        if cfg.scene_workers == 0:
            for batch in sampler:
                yield dataset.batch([index for _, index in batch], device)
            return
        # Scene layouts from worker processes (a whole batch each, packed into arrays there:
        # unpickling 128 SceneSpec objects here took ~130 ms a batch and bound GPU training),
        # rendered here on the device.
        layouts = DataLoader(_SceneLayouts(dataset), batch_sampler=sampler,
                             num_workers=cfg.scene_workers, collate_fn=dataset.pack,
                             persistent_workers=True, prefetch_factor=2)
        for packed in layouts:
            yield dataset.render(packed, device)
        return
    loader = DataLoader(EpochIndexed(dataset), batch_sampler=sampler,
                        num_workers=cfg.num_workers, pin_memory=device.type == 'cuda',
                        persistent_workers=cfg.num_workers > 0,
                        prefetch_factor=4 if cfg.num_workers > 0 else None)
    yield from loader


EVAL_SETS: tuple[tuple[str, float, float], ...] = (('indoor', 10.0, 10.0),
                                                    ('outdoor', 80.0, 80.0))
"""(scene kind, anchor [m], evaluation cap [m]): the paper's 10 m indoor / 80 m outdoor."""
EVAL_SEED = 987_654_321
"""Seed of the held-out synthetic evaluation scenes (never a training seed)."""


def eval_frames(cfg: TrainConfig, device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
    """Render the held-out evaluation scenes once: kind -> batch (CPU tensors)."""
    from metric_solver_ros.data.datasets import SyntheticDataset

    frames = {}
    for kind, _, _ in EVAL_SETS:
        dataset = SyntheticDataset(kind=kind, size=cfg.image_size, length=cfg.eval_frames,
                                   seed=EVAL_SEED)
        batch = dataset.batch(range(cfg.eval_frames), device)
        frames[kind] = {k: v.cpu() for k, v in batch.items()}
    return frames
