"""Loaders (RGB-D folder, Hypersim, VKITTI2) and torch datasets (synthetic, folder, mixed)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from metric_solver_ros.data.datasets import (
    FolderDataset,
    MixedDataset,
    SyntheticDataset,
    sample_to_item,
)
from metric_solver_ros.data.hypersim import (
    Hypersim,
    distance_to_planar,
    hypersim_intrinsics,
    tonemap,
)
from metric_solver_ros.data.rgbd_folder import RGBDFolder, read_depth, write_rgbd_folder
from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic import render_scene
from metric_solver_ros.data.vkitti2 import VKITTI2, read_intrinsics

H, W = 24, 32


@pytest.fixture(scope='module')
def samples() -> list[Sample]:
    out = []
    for kind, seed in (('outdoor', 1), ('indoor', 2), ('outdoor', 3)):
        s = render_scene(kind, seed, H, W)
        s.name = f'frame_{seed}'
        out.append(s)
    out[1].depth_m[0, 0] = 0.0  # invalid pixel
    return out


# ---- RGB-D folder ------------------------------------------------------------------------------


def test_folder_round_trip_png(tmp_path, samples):
    names = write_rgbd_folder(tmp_path, samples, depth_scale=1000.0, depth_format='png')
    assert names == ['frame_1', 'frame_2', 'frame_3']
    ds = RGBDFolder(tmp_path)
    assert len(ds) == 3 and ds.names == sorted(names)
    for orig in samples:
        got = ds[ds.names.index(orig.name)]
        np.testing.assert_array_equal(got.image, orig.image)
        assert got.intrinsics == pytest.approx(orig.intrinsics, rel=1e-12)
        d0, d1 = orig.depth_m, got.depth_m
        ok = np.isfinite(d0) & (d0 > 0) & (d0 <= 65.535)
        np.testing.assert_allclose(d1[ok], d0[ok], atol=0.5e-3 + 1e-6)  # PNG: 1 mm steps
        assert (d1[~ok] == 0).all()  # sky and beyond 65.5 m become invalid in uint16 PNGs
        assert got.depth_m.dtype == np.float32


def test_folder_round_trip_npy_keeps_inf_exactly(tmp_path, samples):
    write_rgbd_folder(tmp_path, samples, depth_format='npy', rgb_format='png')
    ds = RGBDFolder(tmp_path)
    for orig in samples:
        got = ds[ds.names.index(orig.name)]
        np.testing.assert_array_equal(got.depth_m, orig.depth_m)
    assert any(np.isinf(ds[i].depth_m).any() for i in range(len(ds)))
    # the samples have different intrinsics: one JSON per frame
    assert len(list((tmp_path / 'intrinsics').glob('*.json'))) == 3


def test_folder_shared_intrinsics_scene_and_per_frame_override(tmp_path):
    img = np.full((4, 6, 3), 100, np.uint8)
    s = [
        Sample(img, np.full((4, 6), 2.0, np.float32), (5.0, 5.0, 2.5, 1.5), f'f{i}', 'indoor')
        for i in range(2)
    ]
    write_rgbd_folder(tmp_path, s, depth_scale=5000.0)
    shared = json.loads((tmp_path / 'intrinsics.json').read_text())
    assert shared == {'depth_scale': 5000.0, 'fx': 5.0, 'fy': 5.0, 'cx': 2.5, 'cy': 1.5}
    (tmp_path / 'intrinsics').mkdir()
    (tmp_path / 'intrinsics' / 'f1.json').write_text(json.dumps({'fx': 9.0, 'fy': 8.0}))
    ds = RGBDFolder(tmp_path)
    assert ds.scene == 'indoor' and ds[0].scene == 'indoor'
    assert ds[0].intrinsics == (5.0, 5.0, 2.5, 1.5)
    assert ds[1].intrinsics == (9.0, 8.0, 2.5, 1.5)
    np.testing.assert_allclose(ds[1].depth_m, 2.0)  # 10000 / 5000


def test_folder_without_intrinsics_and_jpg(tmp_path):
    (tmp_path / 'rgb').mkdir()
    (tmp_path / 'depth').mkdir()
    cv2.imwrite(str(tmp_path / 'rgb' / 'a.jpg'), np.zeros((4, 5, 3), np.uint8))
    np.save(tmp_path / 'depth' / 'a.npy', np.ones((4, 5), np.float32))
    s = RGBDFolder(tmp_path)[0]
    assert s.intrinsics is None and s.image.shape == (4, 5, 3) and s.name == 'a'
    item = sample_to_item(s)
    assert torch.isnan(item['intrinsics']).all()


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an EXIF APP1 segment holding only the Orientation tag (0x0112)."""
    tiff = (b'MM\x00\x2a\x00\x00\x00\x08' + b'\x00\x01'  # big-endian, IFD at 8, 1 entry
            + b'\x01\x12\x00\x03\x00\x00\x00\x01' + bytes([0, orientation, 0, 0])
            + b'\x00\x00\x00\x00')  # no next IFD
    app1 = b'Exif\x00\x00' + tiff
    return jpeg[:2] + b'\xff\xe1' + (len(app1) + 2).to_bytes(2, 'big') + app1 + jpeg[2:]


def test_folder_ignores_exif_orientation(tmp_path):
    # A phone JPEG tagged "rotate 180": rotating the image but not its depth would misregister
    # them silently (same shape); the stored pixels are what depth and intrinsics refer to.
    (tmp_path / 'rgb').mkdir()
    (tmp_path / 'depth').mkdir()
    image = np.zeros((60, 80, 3), np.uint8)
    image[:30] = 255  # the upper half white
    jpeg = cv2.imencode('.jpg', image)[1].tobytes()
    (tmp_path / 'rgb' / 'a.jpg').write_bytes(_with_exif_orientation(jpeg, 3))
    assert cv2.imread(str(tmp_path / 'rgb' / 'a.jpg'))[0, 0, 0] < 10  # OpenCV would rotate it
    np.save(tmp_path / 'depth' / 'a.npy', np.ones((60, 80), np.float32))
    s = RGBDFolder(tmp_path)[0]
    assert s.image[0, 0, 0] > 245 and s.image[-1, 0, 0] < 10


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='rgb'):
        RGBDFolder(tmp_path)
    (tmp_path / 'rgb').mkdir()
    (tmp_path / 'depth').mkdir()
    cv2.imwrite(str(tmp_path / 'rgb' / 'a.png'), np.zeros((4, 5, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'rgb' / 'b.png'), np.zeros((4, 5, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'depth' / 'a.png'), np.ones((4, 5), np.uint16))
    with pytest.raises(ValueError, match='unpaired'):
        RGBDFolder(tmp_path)
    assert len(RGBDFolder(tmp_path, strict=False)) == 1
    # 8-bit depth PNG: refused
    cv2.imwrite(str(tmp_path / 'depth' / 'b.png'), np.ones((4, 5), np.uint8))
    with pytest.raises(ValueError, match='uint16'):
        RGBDFolder(tmp_path)[1]
    # size mismatch
    cv2.imwrite(str(tmp_path / 'depth' / 'b.png'), np.ones((3, 5), np.uint16))
    with pytest.raises(ValueError, match='differ'):
        RGBDFolder(tmp_path)[1]
    # corrupt file
    (tmp_path / 'depth' / 'b.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match='cannot read'):
        RGBDFolder(tmp_path)[1]
    with pytest.raises(ValueError, match='exr'):
        read_depth(tmp_path / 'x.exr')
    (tmp_path / 'intrinsics.json').write_text('{"fx": 1.0}')
    with pytest.raises(ValueError, match='intrinsics need'):
        RGBDFolder(tmp_path)[0]


# ---- Hypersim ----------------------------------------------------------------------------------


def test_hypersim_distance_to_planar_constructed_case():
    h, w = 6, 8
    k = hypersim_intrinsics(h, w)
    assert k[0] == pytest.approx(886.81 * w / 1024) and k[2] == 3.5 and k[3] == 2.5
    z = np.linspace(1.0, 5.0, h * w).reshape(h, w)
    v, u = np.mgrid[0:h, 0:w]
    dist = z * np.sqrt(((u - k[2]) / k[0]) ** 2 + ((v - k[3]) / k[1]) ** 2 + 1.0)
    dist[0, 0] = np.nan
    planar = distance_to_planar(dist, k)
    assert planar[0, 0] == 0.0
    np.testing.assert_allclose(planar.ravel()[1:], z.ravel()[1:], rtol=1e-6)
    assert (planar[1:] < dist[1:] + 1e-9).all()  # planar <= distance


def test_hypersim_tonemap_percentile():
    rgb = np.random.default_rng(0).uniform(0.0, 3.0, (10, 10, 3))
    img = tonemap(rgb)
    bright = 0.3 * rgb[..., 0] + 0.59 * rgb[..., 1] + 0.11 * rgb[..., 2]
    scale = 0.8**2.2 / np.percentile(bright, 90)
    expect = np.clip((scale * rgb) ** (1 / 2.2), 0, 1) * 255
    assert np.abs(img.astype(float) - expect).max() <= 1.0


def test_hypersim_layout(tmp_path):
    h5py = pytest.importorskip('h5py')
    h, w = 6, 8
    k = hypersim_intrinsics(h, w)
    v, u = np.mgrid[0:h, 0:w]
    norm = np.sqrt(((u - k[2]) / k[0]) ** 2 + ((v - k[3]) / k[1]) ** 2 + 1.0)
    for scene, cam, frame, z in (('ai_001_001', '00', 0, 2.0), ('ai_001_002', '01', 7, 3.0)):
        base = tmp_path / scene / 'images'
        fin = base / f'scene_cam_{cam}_final_hdf5'
        geo = base / f'scene_cam_{cam}_geometry_hdf5'
        fin.mkdir(parents=True)
        geo.mkdir(parents=True)
        with h5py.File(fin / f'frame.{frame:04d}.color.hdf5', 'w') as f:
            f['dataset'] = np.full((h, w, 3), 0.5, np.float16)
        with h5py.File(geo / f'frame.{frame:04d}.depth_meters.hdf5', 'w') as f:
            f['dataset'] = (z * norm).astype(np.float32)
    ds = Hypersim(tmp_path)
    assert len(ds) == 2
    s = ds[1]
    assert s.name == 'ai_001_002/scene_cam_01/0007' and s.scene == 'indoor'
    np.testing.assert_allclose(s.depth_m, 3.0, rtol=1e-6)
    assert s.intrinsics == pytest.approx(k)
    assert s.image.shape == (h, w, 3) and abs(int(s.image[0, 0, 0]) - 204) <= 1  # 0.8 * 255
    assert len(Hypersim(tmp_path, scenes=['ai_001_001'])) == 1
    with pytest.raises(ValueError, match='no Hypersim frames'):
        Hypersim(tmp_path, scenes=['ai_999_999'])


# ---- Virtual KITTI 2 ---------------------------------------------------------------------------


def _write_vkitti(root, scene='Scene01', var='clone', frames=(0, 1)):
    base = root / scene / var
    for cam in (0, 1):
        (base / 'frames' / 'rgb' / f'Camera_{cam}').mkdir(parents=True, exist_ok=True)
        (base / 'frames' / 'depth' / f'Camera_{cam}').mkdir(parents=True, exist_ok=True)
    lines = ['frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]']
    for f in frames:
        for cam in (0, 1):
            lines.append(f'{f} {cam} 725.0087 725.0087 620.5 187.0')
            img = np.full((4, 6, 3), 60 + 10 * f, np.uint8)
            cv2.imwrite(str(base / 'frames' / 'rgb' / f'Camera_{cam}' / f'rgb_{f:05d}.jpg'), img)
            depth = np.full((4, 6), 1234 + f, np.uint16)
            depth[0, :] = 65535
            cv2.imwrite(
                str(base / 'frames' / 'depth' / f'Camera_{cam}' / f'depth_{f:05d}.png'), depth
            )
    (base / 'intrinsic.txt').write_text('\n'.join(lines) + '\n')


def test_vkitti2_layout_sky_and_intrinsics(tmp_path):
    _write_vkitti(tmp_path)
    _write_vkitti(tmp_path, var='fog', frames=(0,))
    ds = VKITTI2(tmp_path)
    assert len(ds) == 3
    s = ds[1]
    assert s.name == 'Scene01/clone/Camera_0/00001' and s.scene == 'outdoor'
    assert np.isinf(s.depth_m[0]).all() and (s.depth_m[0] > 0).all()
    np.testing.assert_allclose(s.depth_m[1:], 12.35, rtol=1e-6)
    assert s.intrinsics == (725.0087, 725.0087, 620.5, 187.0)
    assert len(VKITTI2(tmp_path, variations=['fog'])) == 1
    assert len(VKITTI2(tmp_path, cameras=(0, 1))) == 6
    table = read_intrinsics(tmp_path / 'Scene01' / 'clone' / 'intrinsic.txt')
    assert table[(1, 1)] == (725.0087, 725.0087, 620.5, 187.0)
    with pytest.raises(ValueError, match='no VKITTI2'):
        VKITTI2(tmp_path, scenes=['Scene99'])


# ---- torch datasets ----------------------------------------------------------------------------


def test_synthetic_dataset_items_and_determinism():
    ds = SyntheticDataset('mixed', size=(28, 42), length=16, seed=3)
    a, b = ds[5], ds[5]
    assert a['image'].shape == (3, 28, 42) and a['image'].dtype == torch.float32
    assert 0.0 <= float(a['image'].min()) and float(a['image'].max()) <= 1.0
    assert a['depth_m'].shape == (1, 28, 42) and a['intrinsics'].shape == (4,)
    for key in a:
        assert torch.equal(a[key], b[key])
    other = SyntheticDataset('mixed', size=(28, 42), length=16, seed=4)[5]
    assert not torch.equal(a['depth_m'], other['depth_m'])
    kinds = {ds.kind_of(i) for i in range(16)}
    assert kinds == {'indoor', 'outdoor'}
    item = ds[2]
    assert int(item['scene']) == (1 if ds.kind_of(2) == 'indoor' else 2)
    ref = render_scene(ds.kind_of(2), ds.scene_seed(2), 28, 42)
    np.testing.assert_array_equal(item['depth_m'][0].numpy(), ref.depth_m)
    batch = ds.batch([2, 5])
    assert torch.equal(batch['depth_m'][0], item['depth_m'])
    with pytest.raises(ValueError, match='multiples of 14'):
        SyntheticDataset('indoor', size=(30, 42))
    with pytest.raises(IndexError):
        ds[16]


def test_synthetic_dataset_with_workers_and_distributed_sampler():
    ds = SyntheticDataset('outdoor', size=(14, 28), length=8, seed=0)
    parts = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=1)
        loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2)
        idx = list(sampler)
        got = torch.cat([b['depth_m'] for b in loader])
        ref = torch.stack([ds[i]['depth_m'] for i in idx])
        assert torch.equal(got, ref)
        parts.append(set(idx))
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(range(8))


def test_folder_dataset_augments_deterministically(tmp_path, samples):
    write_rgbd_folder(tmp_path, samples, depth_format='npy')
    src = RGBDFolder(tmp_path)
    ds = FolderDataset(src, size=(14, 28), augment=True, seed=0)
    a, b = ds[1], ds[1]
    assert a['image'].shape == (3, 14, 28) and a['depth_m'].shape == (1, 14, 28)
    assert torch.equal(a['image'], b['image']) and torch.equal(a['depth_m'], b['depth_m'])
    ds.set_epoch(1)
    changed = [
        not torch.equal(ds[i]['image'], FolderDataset(src, (14, 28), True, 0)[i]['image'])
        for i in range(3)
    ]
    assert any(changed)
    plain = FolderDataset(src, size=(14, 28), augment=False)[0]
    fx0 = src[0].intrinsics[0]
    scale = 14 / min(H, W)  # the shorter side to the output's, as inference does
    assert float(plain['intrinsics'][0]) == pytest.approx(fx0 * round(W * scale) / W, rel=1e-5)


def test_mixed_dataset_weights_and_determinism():
    a = SyntheticDataset('indoor', size=(14, 14), length=4, seed=0)
    b = SyntheticDataset('outdoor', size=(14, 14), length=4, seed=0)
    only_b = MixedDataset([a, b], [0.0, 1.0], length=10, seed=0)
    assert all(only_b.locate(i)[0] == 1 for i in range(10))
    mix = MixedDataset([a, b], [3.0, 1.0], length=400, seed=2)
    picks = [mix.locate(i)[0] for i in range(400)]
    assert 0.65 < picks.count(0) / 400 < 0.85
    assert picks == [MixedDataset([a, b], [3.0, 1.0], 400, seed=2).locate(i)[0] for i in range(400)]
    j, k = mix.locate(7)
    assert torch.equal(mix[7]['depth_m'], [a, b][j][k]['depth_m'])
    with pytest.raises(ValueError):
        MixedDataset([a, b], [1.0], length=3)
    with pytest.raises(ValueError):
        MixedDataset([a, b], [0.0, 0.0], length=3)
