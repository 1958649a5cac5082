"""The procedural world: exact depth on analytic scenes, determinism, intrinsics, sky, shadows."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from metric_solver_ros.data.sample import Sample
from metric_solver_ros.data.synthetic import (
    Box,
    Camera,
    Ground,
    Lighting,
    Material,
    Room,
    SceneSpec,
    pack_scenes,
    render_batch,
    render_scene,
    render_specs,
    scene_spec,
)
from metric_solver_ros.data.textures import PATTERNS, make_patterns

H, W = 48, 64
FLAT = Lighting(shadows=False, noise_std=0.0, vignette=0.0, clouds=0.0, fog_per_m=0.0)


def _cam(fx_px: float = 50.0, **pose) -> Camera:
    return Camera.from_pixels(fx_px, fx_px, (W - 1) / 2, (H - 1) / 2, W, H, **pose)


def _render(spec: SceneSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = render_specs([spec], H, W)
    return (
        out['depth_m'][0, 0].numpy(),
        out['image'][0].permute(1, 2, 0).numpy(),
        out['intrinsics'][0].numpy(),
    )


def _rays_world(spec: SceneSpec, k: np.ndarray) -> np.ndarray:
    """[H, W, 3] world ray directions with camera z = 1."""
    fx, fy, cx, cy = k
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d_cam = np.stack(((u - cx) / fx, (v - cy) / fy, np.ones_like(u)), -1)
    return d_cam @ spec.camera.rotation().T


def test_wall_at_distance_d_has_depth_d_everywhere():
    dist = 3.7
    room = Room((-100.0, 100.0, 0.0, 200.0, -1.0, dist))
    spec = SceneSpec(_cam(position_m=(0.0, 100.0, 0.0)), room=room, lighting=FLAT)
    depth, _, _ = _render(spec)
    np.testing.assert_allclose(depth, dist, rtol=1e-6)


def test_rays_parallel_to_room_faces_hit_the_far_wall():
    # Odd sizes put a pixel centre on the optical axis of an unrotated camera: its ray is
    # parallel to four faces (d = +-0) and must exit through the far wall, not become sky.
    h, w = 49, 65
    camera = Camera.from_pixels(50.0, 50.0, (w - 1) / 2, (h - 1) / 2, w, h,
                                position_m=(3.0, 1.4, 4.0))
    spec = SceneSpec(camera, room=Room((0.0, 6.0, 0.0, 2.8, 0.0, 9.0)), lighting=FLAT)
    depth = render_specs([spec], h, w)['depth_m'][0, 0].numpy()
    assert np.isfinite(depth).all()
    assert depth[h // 2, w // 2] == pytest.approx(5.0, rel=1e-6)  # far wall z = 9, camera z = 4


def test_box_wall_gives_planar_depth_not_distance():
    # a big box face at z = 5 filling a wide (100 deg) view: planar depth is 5 at every pixel
    spec = SceneSpec(
        _cam(fx_px=W / 2 / math.tan(math.radians(50)), position_m=(0.0, 1.0, 0.0)),
        boxes=[Box((0.0, 1.0, 5.5), (100.0, 100.0, 1.0))],
        lighting=FLAT,
    )
    depth, _, _ = _render(spec)
    np.testing.assert_allclose(depth, 5.0, rtol=1e-6)


def test_ground_plane_depth_per_row_and_sky_above_horizon():
    h_m, pitch = 1.6, math.radians(-7.0)
    spec = SceneSpec(
        _cam(position_m=(0.3, h_m, -2.0), pitch_rad=pitch, yaw_rad=0.4),
        ground=Ground(),
        lighting=FLAT,
    )
    depth, _, k = _render(spec)
    fy, cy = k[1], k[3]
    b = (np.arange(H) - cy) / fy
    denom = b * math.cos(pitch) - math.sin(pitch)
    for row in range(H):
        if denom[row] > 1e-3:
            np.testing.assert_allclose(depth[row], h_m / denom[row], rtol=1e-5)
        elif denom[row] <= 0:
            assert np.isinf(depth[row]).all() and (depth[row] > 0).all()
    assert np.isinf(depth).any() and np.isfinite(depth).any()


def test_box_at_known_position_has_known_depth_and_silhouette():
    spec = SceneSpec(
        _cam(position_m=(0.0, 1.0, 0.0)),
        boxes=[Box((0.0, 1.0, 5.0), (1.0, 1.0, 1.0))],
        lighting=FLAT,
    )
    depth, _, k = _render(spec)
    fx, fy, cx, cy = k
    v, u = np.mgrid[0:H, 0:W]
    x, y = (u - cx) / fx * 4.5, (v - cy) / fy * 4.5  # camera-frame point on the front face
    inside = (np.abs(x) < 0.5 - 1e-3) & (np.abs(y) < 0.5 - 1e-3)
    outside = (np.abs(x) > 0.5 + 1e-3) | (np.abs(y) > 0.5 + 1e-3)
    assert inside.sum() > 20
    np.testing.assert_allclose(depth[inside], 4.5, rtol=1e-6)
    assert np.isinf(depth[outside]).all()


def test_yawed_box_edge_depth():
    # a unit cube turned by 45 deg shows its vertical edge at z = 5 - sqrt(0.5)
    spec = SceneSpec(
        Camera.from_pixels(50.0, 50.0, 32.0, 24.0, W, H, position_m=(0.0, 1.0, 0.0)),
        boxes=[Box((0.0, 1.0, 5.0), (1.0, 1.0, 1.0), yaw_rad=math.pi / 4)],
        lighting=FLAT,
    )
    depth, _, _ = _render(spec)
    assert depth[24, 32] == pytest.approx(5.0 - math.sqrt(0.5), rel=1e-5)
    # either side of the edge the depth grows linearly with |x| (faces at 45 deg)
    x = (np.arange(28, 37) - 32.0) / 50.0
    expected = (5.0 - math.sqrt(0.5)) / (1.0 - np.abs(x))
    np.testing.assert_allclose(depth[24, 28:37], expected, rtol=1e-5)


def test_sphere_and_cylinder_depth():
    # a ball of radius 0.5 centred 5 m ahead, on the optical axis
    cam = Camera.from_pixels(50.0, 50.0, 32.0, 24.0, W, H, position_m=(0.0, 1.0, 0.0))
    ball = Box((0.0, 1.0, 5.0), (1.0, 1.0, 1.0), shape='ellipsoid')
    depth, _, _ = _render(SceneSpec(cam, boxes=[ball], lighting=FLAT))
    x = (np.arange(W) - 32.0) / 50.0  # ray (x, 0, 1) meets x^2 + (z - 5)^2 = 0.25
    a, b, c = x**2 + 1, -10.0, 25.0 - 0.25
    disc = b * b - 4 * a * c
    hit = disc > 1e-3
    z = (-b - np.sqrt(np.where(hit, disc, 0))) / (2 * a)
    np.testing.assert_allclose(depth[24][hit], z[hit], rtol=1e-5)
    assert depth[24, 32] == pytest.approx(4.5, rel=1e-6)
    assert np.isinf(depth[24][disc < -1e-3]).all()
    # a vertical cylinder (radius 0.5, y in [0, 1]) has the same profile along any row that
    # meets its side; seen from above, its flat top cap lies inside the radius
    cyl = Box((0.0, 0.5, 5.0), (1.0, 1.0, 1.0), shape='cylinder')
    depth, _, _ = _render(SceneSpec(cam, boxes=[cyl], lighting=FLAT))
    row = 24 + 5  # ray y = 1 - 0.1 z: inside y in [0, 1] at z ~ 4.5..5.5
    np.testing.assert_allclose(depth[row][hit], z[hit], rtol=1e-5)
    cam_up = Camera.from_pixels(
        50.0, 50.0, 32.0, 24.0, W, H, position_m=(0.0, 3.0, 0.0), pitch_rad=-math.atan(0.4)
    )
    spec = SceneSpec(cam_up, boxes=[cyl], lighting=FLAT)
    depth, _, k = _render(spec)
    hit_m = np.where(np.isfinite(depth), depth, 0.0)[..., None]
    pts = np.array(cam_up.position_m) + _rays_world(spec, k) * hit_m
    on_top = np.isfinite(depth) & (np.abs(pts[..., 1] - 1.0) < 1e-4)
    assert on_top.sum() > 10
    assert (np.hypot(pts[on_top][:, 0], pts[on_top][:, 2] - 5.0) <= 0.5 + 1e-4).all()


def test_nearest_box_occludes_regardless_of_order():
    near = Box((0.0, 1.0, 3.0), (0.6, 0.6, 0.2))
    far = Box((0.0, 1.0, 8.0), (4.0, 4.0, 1.0))
    d1, _, _ = _render(SceneSpec(_cam(position_m=(0.0, 1.0, 0.0)), boxes=[near, far]))
    d2, _, _ = _render(SceneSpec(_cam(position_m=(0.0, 1.0, 0.0)), boxes=[far, near]))
    np.testing.assert_array_equal(d1, d2)
    assert d1[H // 2, W // 2] == pytest.approx(2.9, rel=1e-6)
    assert np.isclose(d1, 7.5, rtol=1e-6).sum() > 100


def test_intrinsics_project_known_point_to_its_pixel():
    cam = _cam(position_m=(0.2, 1.3, -0.5), yaw_rad=0.3, pitch_rad=-0.2, roll_rad=0.05)
    spec = SceneSpec(cam, ground=Ground(), lighting=FLAT)
    depth, _, k = _render(spec)
    fx, fy, cx, cy = k
    r = cam.rotation()
    o = np.array(cam.position_m)
    for world in ([0.5, 0.0, 4.0], [-0.4, 0.0, 2.5], [1.0, 0.0, 6.0]):
        p_cam = r.T @ (np.array(world) - o)
        u, v = fx * p_cam[0] / p_cam[2] + cx, fy * p_cam[1] / p_cam[2] + cy
        iu, iv = int(round(u)), int(round(v))
        assert 0 <= iu < W and 0 <= iv < H
        # at the pixel centre the ground depth differs from the point's by < 1 px of slope
        assert depth[iv, iu] == pytest.approx(p_cam[2], rel=0.05)
        # and back-projecting the pixel with the depth lands on the ground plane exactly
        ray = np.array([(iu - cx) / fx, (iv - cy) / fy, 1.0])
        assert (o + r @ ray * depth[iv, iu])[1] == pytest.approx(0.0, abs=1e-4)


def _surface_distance(points: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """Distance [m] from each world point to the nearest primitive surface."""
    best = np.full(points.shape[0], np.inf)
    if spec.ground is not None:
        best = np.minimum(best, np.abs(points[:, 1] - spec.ground.height_m))
    if spec.room is not None:
        b = np.array(spec.room.bounds_m).reshape(3, 2)
        for a in range(3):
            for side in range(2):
                best = np.minimum(best, np.abs(points[:, a] - b[a, side]))
    for box in spec.boxes:
        c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
        rel = points - np.array(box.centre_m)
        local = np.stack(
            (c * rel[:, 0] - s * rel[:, 2], rel[:, 1], s * rel[:, 0] + c * rel[:, 2]), 1
        )
        half = np.array(box.size_m) / 2
        if box.shape == 'box':
            q = np.abs(local) - half
            sd = np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
        else:  # distance in the unit-shape frame, scaled back by the smallest semi-axis
            u = local / half
            if box.shape == 'ellipsoid':
                sd = (np.linalg.norm(u, axis=1) - 1) * half.min()
            else:
                side = np.hypot(u[:, 0], u[:, 2]) - 1
                cap = np.abs(u[:, 1]) - 1
                sd = np.maximum(side * min(half[0], half[2]), cap * half[1])
        best = np.minimum(best, np.abs(sd))
    return best


@pytest.mark.parametrize(
    'kind,seed', [('indoor', s) for s in (3, 11, 21, 33)] + [('outdoor', s) for s in (5, 8, 13, 40)]
)
def test_random_scene_points_lie_on_scene_surfaces(kind, seed):
    spec = scene_spec(kind, seed)
    depth, _, k = _render(spec)
    rays = _rays_world(spec, k)
    fin = np.isfinite(depth)
    assert fin.mean() > 0.3
    pts = np.array(spec.camera.position_m) + rays[fin] * depth[fin][:, None]
    dist = _surface_distance(pts, spec)
    tol = 1e-4 + 2e-6 * depth[fin]
    assert (dist < tol).all(), f'max off-surface {dist.max()} m'
    # sky only where the ray points above the horizon (outdoor) and nowhere indoors
    sky = np.isinf(depth)
    if kind == 'indoor':
        assert not sky.any()
    else:
        assert (rays[sky][:, 1] > 0).all()
    assert (depth[fin] > 0.05).all()


def test_determinism_and_seed_sensitivity():
    a = render_scene('outdoor', 17, H, W)
    b = render_scene('outdoor', 17, H, W)
    c = render_scene('outdoor', 18, H, W)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.depth_m.tobytes() == b.depth_m.tobytes()
    assert a.intrinsics == b.intrinsics
    assert a.image.tobytes() != c.image.tobytes()
    assert a.depth_m.tobytes() != c.depth_m.tobytes()
    assert render_scene('indoor', 17, H, W).depth_m.tobytes() != a.depth_m.tobytes()


def test_render_scene_sample_and_batch_agree():
    s = render_scene('indoor', 4, H, W)
    assert isinstance(s, Sample) and s.scene == 'indoor'
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.depth_m.shape == (H, W) and s.depth_m.dtype == np.float32
    out = render_batch('indoor', [9, 4], H, W, torch.device('cpu'))
    assert out['image'].shape == (2, 3, H, W) and out['image'].dtype == torch.uint8
    assert out['depth_m'].shape == (2, 1, H, W) and out['depth_m'].dtype == torch.float32
    assert out['intrinsics'].shape == (2, 4)
    np.testing.assert_array_equal(out['depth_m'][1, 0].numpy(), s.depth_m)
    np.testing.assert_array_equal(out['image'][1].permute(1, 2, 0).numpy(), s.image)
    assert tuple(out['intrinsics'][1].tolist()) == pytest.approx(s.intrinsics)


def test_vectorised_batch_of_mixed_kinds_matches_frame_by_frame():
    # the path used on GPUs (all frames in one call) against one frame per call
    specs = [scene_spec('indoor', 1), scene_spec('outdoor', 2), scene_spec('outdoor', 3)]
    one = render_specs(specs, H, W, frames_per_call=1)
    all_ = render_specs(specs, H, W, frames_per_call=3)
    d1, d3 = one['depth_m'].numpy(), all_['depth_m'].numpy()
    np.testing.assert_array_equal(np.isinf(d1), np.isinf(d3))
    fin = np.isfinite(d1)
    np.testing.assert_allclose(d3[fin], d1[fin], rtol=1e-5)
    torch.testing.assert_close(all_['intrinsics'], one['intrinsics'])
    diff = (all_['image'].int() - one['image'].int()).abs()
    assert diff.float().mean() < 0.5 and (diff > 8).float().mean() < 0.01


def test_packed_scenes_render_like_their_specs():
    # scene_workers send pack_scenes(...) instead of SceneSpec objects: same frames, any slice
    specs = [scene_spec('indoor', 1), scene_spec('outdoor', 2), scene_spec('outdoor', 3)]
    packed = pickle.loads(pickle.dumps(pack_scenes(specs, H, W)))  # as a worker sends it
    assert len(packed) == 3 and packed.kinds == ('indoor', 'outdoor', 'outdoor')
    ref = render_specs(specs, H, W)  # CPU: one frame per call, each packed alone
    for frames_per_call in (None, 2):  # a select() trims the padding to its own scenes
        out = render_specs(packed, H, W, frames_per_call=frames_per_call)
        for key in ref:
            torch.testing.assert_close(out[key], ref[key], rtol=0, atol=0)
    alone = packed.select(1, 2)
    assert alone.boxes.shape[1] == len(specs[1].boxes)
    assert alone.mats.shape[1] == len(specs[1].materials)
    with pytest.raises(ValueError, match='packed for'):
        render_specs(packed, H + 1, W)


def test_layout_is_resolution_independent_and_intrinsics_scale():
    small = render_scene('outdoor', 2, 24, 32)
    big = render_scene('outdoor', 2, 48, 64)
    fx_s, fy_s, cx_s, cy_s = small.intrinsics
    fx_b, fy_b, cx_b, cy_b = big.intrinsics
    assert fx_b == pytest.approx(2 * fx_s, rel=1e-6) and fy_b == pytest.approx(2 * fy_s, rel=1e-6)
    assert cx_b == pytest.approx(2 * cx_s + 0.5, rel=1e-6)
    assert cy_b == pytest.approx(2 * cy_s + 0.5, rel=1e-6)
    # the same world: the median depth agrees closely
    assert np.median(small.depth_m) == pytest.approx(np.median(big.depth_m), rel=0.1)


def test_random_intrinsics_within_spec():
    for kind in ('indoor', 'outdoor'):
        for seed in range(40):
            cam = scene_spec(kind, seed).camera
            hfov = math.degrees(2 * math.atan(0.5 / cam.fx_w))
            assert 40 - 1e-6 <= hfov <= 110 + 1e-6
            assert abs(cam.cx_w - 0.5) <= 0.04 + 1e-9 and abs(cam.cy_h - 0.5) <= 0.04 + 1e-9


def test_sun_shadow_falls_below_blocking_box():
    # camera looks straight down at the ground; a box far above it blocks the sun at the zenith
    light = Lighting(
        sun_dir=(0.0, 1.0, 0.0),
        sun_rgb=(2.0, 2.0, 2.0),
        ambient_rgb=(0.2, 0.2, 0.2),
        shadows=True,
        noise_std=0.0,
        vignette=0.0,
    )
    spec = SceneSpec(
        _cam(position_m=(0.0, 2.0, 0.0), pitch_rad=-math.pi / 2),
        materials=[Material('plain', (1, 1), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))],
        boxes=[Box((-1.0, 30.0, 0.0), (2.0, 1.0, 10.0))],  # shadow covers x in [-2, 0]
        ground=Ground(),
        lighting=light,
    )
    depth, img, k = _render(spec)
    rays = _rays_world(spec, k)
    pts = np.array(spec.camera.position_m) + rays * depth[..., None]
    grey = img.astype(float).mean(-1)
    shade = grey[pts[..., 0] < -0.1].mean()
    lit = grey[pts[..., 0] > 0.1].mean()
    assert np.isfinite(depth).all()
    assert shade < 0.6 * lit
    spec.lighting.shadows = False
    _, img2, _ = _render(spec)
    grey2 = img2.astype(float).mean(-1)
    assert grey2[pts[..., 0] < -0.1].mean() == pytest.approx(grey2[pts[..., 0] > 0.1].mean(), abs=1)


def test_patterns_are_tileable_and_in_range():
    pats = make_patterns(32)
    assert pats.shape == (len(PATTERNS), 32, 32)
    assert pats.min() >= 0 and pats.max() <= 1
    assert (pats.std(axis=(1, 2)) > 0.01).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        scene_spec('underwater', 0)
    with pytest.raises(ValueError):
        scene_spec('indoor', -1)
    with pytest.raises(ValueError):
        render_specs([], 8, 8)
    spec = SceneSpec(_cam(), boxes=[Box((0, 0, 5), (1, 1, 1), material=3)])
    with pytest.raises(ValueError):
        render_specs([spec], 8, 8)
