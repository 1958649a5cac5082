"""The official public checkpoints ``metric-solver weights`` knows: one frozen entry per file.

Data only (no I/O): the downloader is :mod:`metric_solver_ros.download`, the command
``metric_solver_ros.commands.weights``. Sources, read 2026-12:

- DINOv2 backbones: ``dinov2/hub/backbones.py`` builds
  ``https://dl.fbaipublicfiles.com/dinov2/<base>/<base>[_reg4]_pretrain.pth`` (the register
  models sit in the folder of their base model). Meta's README: "DINOv2 code and model weights
  are released under the Apache License 2.0". Meta states neither sizes nor checksums.
- Depth Anything V2: the download links of the README and ``metric_depth/README.md`` of
  DepthAnything/Depth-Anything-V2. Its README: Small is Apache-2.0, Base/Large/Giant are
  CC-BY-NC-4.0. The Hugging Face cards of the metric Base/Large repositories carry an
  ``apache-2.0`` tag; they are fine-tunes of the CC-BY-NC-4.0 relative models, so the
  stricter licence is listed (and ``get`` asks for ``--accept-license``).
- Sizes and sha256: the Git LFS pointers (``oid sha256:``, ``size``) of the publisher's Hugging
  Face repositories, only where the publisher's own pointer was read. For
  ``depth_anything_v2_vitl`` and ``..._metric_hypersim_vits`` it was not found (only other
  projects' pins), so both are None: the first download records its checksum with a warning.
"""

from __future__ import annotations

import dataclasses
import re

#: What a checkpoint holds.
KINDS = ('encoder', 'relative depth', 'metric depth')
#: Architecture presets (``metric_solver_ros.model.PRESETS`` names) the entries map to.
WEIGHT_PRESETS = ('vits', 'vitb', 'vitl', 'vitg')
#: Licences whose terms forbid commercial use: ``get`` asks for an explicit acceptance.
NON_COMMERCIAL_LICENCES = frozenset({'CC-BY-NC-4.0'})

_SHA256 = re.compile(r'[0-9a-f]{64}')
_DINOV2_URL = 'https://dl.fbaipublicfiles.com/dinov2/{base}/{file}'
_DAV2_URL = 'https://huggingface.co/depth-anything/{repo}/resolve/main/{file}'
_DAV2_SIZE = {'vits': 'Small', 'vitb': 'Base', 'vitl': 'Large'}
#: Depth range each metric fine-tune was trained for [m] (metric_depth/README.md).
_DAV2_METRIC_MAX_DEPTH_M = {'hypersim': 20.0, 'vkitti': 80.0}
_DAV2_METRIC_REPO = {'hypersim': 'Hypersim', 'vkitti': 'VKITTI'}


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One official checkpoint file.

    Attributes:
        name: Registry name, the ``NAME`` of ``metric-solver weights get NAME``.
        kind: One of :data:`KINDS`.
        preset: Architecture preset of the encoder, one of :data:`WEIGHT_PRESETS`.
        licence: SPDX identifier of the weights' licence.
        url: Where the publisher serves the file.
        file_name: The publisher's file name (the last part of ``url``); the name in the cache.
        size_bytes: File size [bytes], None where no public source states it.
        sha256: Lower-case hex SHA-256 of the file, None where no public source states it.
        max_depth_m: Metric models: the depth range the model was trained for [m]; else None.
    """

    name: str
    kind: str
    preset: str
    licence: str
    url: str
    file_name: str
    size_bytes: int | None = None
    sha256: str | None = None
    max_depth_m: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'{self.name}: kind {self.kind!r} is not one of {KINDS}')
        if self.preset not in WEIGHT_PRESETS:
            raise ValueError(f'{self.name}: preset {self.preset!r} is not one of {WEIGHT_PRESETS}')
        if self.sha256 is not None and not _SHA256.fullmatch(self.sha256):
            raise ValueError(f'{self.name}: sha256 must be 64 lower-case hex digits')
        if self.url.rsplit('/', 1)[-1] != self.file_name:
            raise ValueError(f'{self.name}: file_name {self.file_name!r} does not end {self.url}')
        if (self.max_depth_m is not None) != (self.kind == 'metric depth'):
            raise ValueError(f'{self.name}: max_depth_m is set exactly for metric depth models')

    @property
    def needs_acceptance(self) -> bool:
        """True when the licence forbids commercial use (``get`` needs ``--accept-license``)."""
        return self.licence in NON_COMMERCIAL_LICENCES

    def to_json(self) -> dict[str, object]:
        """The ``weights list --json`` object: exactly these keys (a documented contract)."""
        return {'name': self.name, 'kind': self.kind, 'preset': self.preset,
                'licence': self.licence, 'size_bytes': self.size_bytes, 'url': self.url,
                'sha256': self.sha256}


def _dinov2(preset: str, registers: bool) -> WeightEntry:
    base = f'dinov2_{preset}14'
    name = f'{base}_reg4' if registers else base
    file_name = f'{name}_pretrain.pth'
    return WeightEntry(name=name, kind='encoder', preset=preset, licence='Apache-2.0',
                       url=_DINOV2_URL.format(base=base, file=file_name), file_name=file_name)


def _dav2(preset: str, size_bytes: int | None, sha256: str | None,
          dataset: str | None = None) -> WeightEntry:
    licence = 'Apache-2.0' if preset == 'vits' else 'CC-BY-NC-4.0'
    if dataset is None:
        name, repo = f'depth_anything_v2_{preset}', f'Depth-Anything-V2-{_DAV2_SIZE[preset]}'
        kind, max_depth_m = 'relative depth', None
    else:
        name = f'depth_anything_v2_metric_{dataset}_{preset}'
        repo = f'Depth-Anything-V2-Metric-{_DAV2_METRIC_REPO[dataset]}-{_DAV2_SIZE[preset]}'
        kind, max_depth_m = 'metric depth', _DAV2_METRIC_MAX_DEPTH_M[dataset]
    file_name = f'{name}.pth'
    return WeightEntry(name=name, kind=kind, preset=preset, licence=licence,
                       url=_DAV2_URL.format(repo=repo, file=file_name), file_name=file_name,
                       size_bytes=size_bytes, sha256=sha256, max_depth_m=max_depth_m)


_ENTRIES = (
    *(_dinov2(preset, registers) for registers in (False, True) for preset in WEIGHT_PRESETS),
    _dav2('vits', 99_218_434, '715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378'),
    _dav2('vitb', 389_961_218, '0d2b7002e62d39d655571c371333340bd88f67ab95050c03591555aa05645328'),
    _dav2('vitl', None, None),  # the publisher's LFS pointer was not found: checksum recorded
    _dav2('vits', None, None, 'hypersim'),  # as above
    _dav2('vitb', 389_965_138, '9dc9e274c5eff55c6daf27b660c0ced0eca4e8593a6da90cdcb04d2b4d3f3fa2',
          'hypersim'),
    _dav2('vitl', 1_341_401_882,
          '6f82ff2bc543ac02ddff4aa31fa363676a8305dd3ccf04e80e2af115a044cb6d', 'hypersim'),
    _dav2('vits', 99_221_808, '9203e538d35255c90dda4b7fedb47ff33fe725497bcca3b1e53b3a65ee63f0cb',
          'vkitti'),
    _dav2('vitb', 389_964_656, '4dad67a7cc10b462bca48e6b8569c762b8eb3c1adada170a3851a6d3ba37bb3e',
          'vkitti'),
    _dav2('vitl', 1_341_401_064,
          '239b1054a369e66da2576e9a118d6d7c12d90dc8ebe609579a9a09cd8e05fe38', 'vkitti'),
)

#: name -> entry, in ``weights list`` order.
REGISTRY: dict[str, WeightEntry] = {entry.name: entry for entry in _ENTRIES}


def get_entry(name: str) -> WeightEntry:
    """The registry entry called ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the known names.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f'unknown weights {name!r}; known: {", ".join(REGISTRY)} '
                         '(see `metric-solver weights list`)') from None
