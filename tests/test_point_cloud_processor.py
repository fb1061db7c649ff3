"""The point-cloud processor: normalisation, farthest-point sampling, kNN grouping, Chamfer-L2, file readers,
determinism, augmentation ranges, errors and save/load."""

import struct

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor

import hf_mae
from hf_mae.modeling.losses import chamfer_l2
from hf_mae.modeling.point_groups import farthest_point_sample, group_points, knn_indices
from hf_mae.processors.point_cloud_processing import (
    PointCloudFeatureExtractor,
    farthest_point_indices,
    read_point_cloud,
)


def cloud(n=300, columns=3, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, columns)) * 2.0 + 3.0).astype(np.float32)


def test_normalisation_centres_and_scales_to_the_unit_sphere():
    out = PointCloudFeatureExtractor(num_points=128)([cloud(), cloud(seed=1) * 7])["point_values"]
    assert out.shape == (2, 128, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out.mean(1), torch.zeros(2, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.norm(dim=-1).max(1).values, torch.ones(2), rtol=0, atol=1e-6)
    raw = PointCloudFeatureExtractor(num_points=128, normalize=False)(cloud())["point_values"][0]
    assert raw.norm(dim=-1).max() > 3  # untouched coordinates


def brute_force_fps(points, k):
    picked = [0]
    for _ in range(k - 1):
        best, best_distance = None, -1.0
        for i in range(len(points)):
            distance = min(float(((points[i] - points[j]) ** 2).sum()) for j in picked)
            if distance > best_distance:
                best, best_distance = i, distance
        picked.append(best)
    return picked


def test_fps_picks_the_farthest_point_at_each_step():
    points = cloud(60)
    expected = brute_force_fps(points, 12)
    assert farthest_point_indices(points, 12).tolist() == expected
    assert farthest_point_sample(torch.from_numpy(points)[None], 12)[0].tolist() == expected  # model's FPS agrees
    processed = PointCloudFeatureExtractor(num_points=12, normalize=False)(points)["point_values"][0]
    assert torch.equal(processed, torch.from_numpy(points[expected]))


def test_knn_grouping_against_brute_force():
    points = torch.from_numpy(cloud(80))[None]
    groups = group_points(points, 6, 10)
    for g in range(6):
        centre = points[0, groups.center_indices[0, g]]
        distances = ((points[0] - centre) ** 2).sum(-1)
        assert set(groups.member_indices[0, g].tolist()) == set(distances.argsort()[:10].tolist())
        torch.testing.assert_close(groups.neighborhoods[0, g], points[0, groups.member_indices[0, g]] - centre)
    assert torch.equal(knn_indices(groups.centers, points, 1)[0, :, 0], groups.center_indices[0])  # itself first


def test_chamfer_l2_against_a_double_loop():
    generator = torch.Generator().manual_seed(0)
    p, q = torch.randn(3, 7, 3, generator=generator), torch.randn(3, 5, 3, generator=generator)
    for s in range(3):
        forward = sum(min(float(((a - b) ** 2).sum()) for b in q[s]) for a in p[s]) / 7
        backward = sum(min(float(((a - b) ** 2).sum()) for a in p[s]) for b in q[s]) / 5
        assert abs(chamfer_l2(p, q)[s].item() - (forward + backward)) < 1e-5


def write_files(folder, points):
    """The same points in every supported format (with extra normal columns where the format allows)."""
    normals = np.ones_like(points)
    paths = {}
    paths["npy"] = folder / "c.npy"
    np.save(paths["npy"], np.concatenate([points, normals], 1))
    paths["npz"] = folder / "c.npz"
    np.savez(paths["npz"], labels=np.zeros(3), points=points)
    paths["txt"] = folder / "c.txt"
    np.savetxt(paths["txt"], np.concatenate([points, normals], 1), delimiter=",", fmt="%.9g")
    paths["xyz"] = folder / "c.xyz"
    np.savetxt(paths["xyz"], points, fmt="%.9g")
    paths["off"] = folder / "c.off"
    body = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in points)
    paths["off"].write_text(f"OFF\n# a comment\n{len(points)} 1 0\n{body}\n3 0 1 2\n")
    header = (f"ply\nformat {{}} 1.0\ncomment made by a test\nelement vertex {len(points)}\nproperty float x\n"
              "property float y\nproperty float z\nproperty uchar red\nelement face 1\n"
              "property list uchar int vertex_indices\nend_header\n")  # fmt: skip
    paths["ply_ascii"] = folder / "a.ply"
    rows = "\n".join(" ".join(f"{v:.9g}" for v in row) + " 255" for row in points)
    paths["ply_ascii"].write_text(header.format("ascii") + rows + "\n3 0 1 2\n")
    paths["ply_binary"] = folder / "b.ply"
    data = b"".join(struct.pack("<fffB", *row, 7) for row in points.tolist())
    paths["ply_binary"].write_bytes(header.format("binary_little_endian").encode() + data + struct.pack("<Biii", 3, 0, 1, 2))
    return paths


def test_file_readers_give_the_same_points(tmp_path):
    points = cloud(50)
    paths = write_files(tmp_path, points)
    for kind, path in paths.items():
        read = read_point_cloud(path)
        assert read.shape == (50, 3) and read.dtype == np.float32, kind
        np.testing.assert_allclose(read, points, rtol=0, atol=1e-6, err_msg=kind)
    processor = PointCloudFeatureExtractor(num_points=32)
    from_files = processor([str(p) for p in paths.values()])["point_values"]
    from_array = processor(points)["point_values"]
    assert from_files.shape == (len(paths), 32, 3)
    torch.testing.assert_close(from_files, from_array.expand_as(from_files), rtol=0, atol=1e-5)
    glued = tmp_path / "glued.off"  # ModelNet's files sometimes glue the counts to the keyword
    glued.write_text(paths["off"].read_text().replace("OFF\n# a comment\n", "OFF"))
    np.testing.assert_allclose(read_point_cloud(glued), points, rtol=0, atol=1e-6)


def test_inputs_of_every_kind_and_upsampling():
    processor = PointCloudFeatureExtractor(num_points=64)
    points = cloud(200, columns=6)  # normals dropped
    expected = processor(points[:, :3])["point_values"]
    for given in (points, torch.from_numpy(points), points.tolist(), [points], points[None]):
        torch.testing.assert_close(processor(given)["point_values"], expected)
    assert isinstance(processor(points, return_tensors="np")["point_values"], np.ndarray)
    few = cloud(10)  # fewer points than num_points: repeated cyclically
    out = PointCloudFeatureExtractor(num_points=25, normalize=False)(few)["point_values"][0]
    assert torch.equal(out, torch.from_numpy(few[np.arange(25) % 10]))
    ragged = processor([cloud(100), cloud(30)])["point_values"]
    assert ragged.shape == (2, 64, 3)


def test_seeded_randomness_is_deterministic():
    processor = PointCloudFeatureExtractor(num_points=64, sampling="random")
    points = cloud(500)
    a, b = processor(points, seed=3)["point_values"], processor(points, seed=3)["point_values"]
    assert torch.equal(a, b) and not torch.equal(a, processor(points, seed=4)["point_values"])
    torch.manual_seed(0)
    c = processor(points, augment=True)["point_values"]
    torch.manual_seed(0)
    assert torch.equal(c, processor(points, augment=True)["point_values"])  # torch's global seed decides
    fps = PointCloudFeatureExtractor(num_points=64)
    assert torch.equal(fps(points)["point_values"], fps(points)["point_values"])


def test_augmentation_ranges():
    processor = PointCloudFeatureExtractor(num_points=2)
    assert processor.training_call_kwargs == {"augment": True}
    # two points at +-x, +-y, +-z after normalisation: the augmented pair reveals the scale and the shift per axis
    scales, shifts = [], []
    for axis in range(3):
        pair = np.zeros((2, 3), dtype=np.float32)
        pair[0, axis], pair[1, axis] = 1.0, -1.0
        out = processor([pair] * 400, augment=True, seed=axis)["point_values"].numpy()
        scales.append(np.abs(out[:, 0, axis] - out[:, 1, axis]) / 2)  # the random subset may swap the pair
        shifts.append((out[:, 0] + out[:, 1]) / 2)
    scales, shifts = np.concatenate(scales), np.concatenate(shifts)
    print(f"scale in [{scales.min():.3f}, {scales.max():.3f}], shift in [{shifts.min():.3f}, {shifts.max():.3f}]")
    assert 2 / 3 - 1e-6 <= scales.min() < 0.7 and 1.45 < scales.max() <= 1.5 + 1e-6
    assert -0.2 - 1e-6 <= shifts.min() < -0.18 and 0.18 < shifts.max() <= 0.2 + 1e-6
    big = cloud(1000)  # augment=True draws a random subset instead of FPS
    subset = PointCloudFeatureExtractor(num_points=64, normalize=False, translate_range=0.0, scale_range=(1, 1))
    out = subset(big, augment=True, seed=0)["point_values"][0].numpy()
    assert not np.array_equal(out, big[farthest_point_indices(big, 64)])
    assert all(np.isclose(big, row, atol=1e-6).all(1).any() for row in out)  # every point is an input point


def test_clear_errors(tmp_path):
    processor = PointCloudFeatureExtractor(num_points=16)
    with pytest.raises(ValueError, match="cloud 0 is empty"):
        processor(np.zeros((0, 3)))
    broken = cloud(40)
    broken[3, 1] = np.nan
    with pytest.raises(ValueError, match="cloud 0 contains NaN"):
        processor(broken)
    with pytest.raises(ValueError, match=r"cloud 1 must have shape \(num_points, 3"):
        processor([cloud(20), np.zeros((20, 2))])
    with pytest.raises(ValueError, match="clouds is empty"):
        processor([])
    with pytest.raises(TypeError, match="clouds must be"):
        processor(42)
    with pytest.raises(TypeError, match="must hold numbers"):
        processor(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match="return_tensors"):
        processor(cloud(), return_tensors="tf")
    with pytest.raises(ValueError, match="suffix"):
        processor(str(tmp_path / "cloud.obj"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        processor(str(tmp_path / "missing.npy"))
    bad = tmp_path / "bad.ply"
    bad.write_text("ply\nformat binary_big_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n")
    with pytest.raises(ValueError, match="binary_big_endian"):
        read_point_cloud(bad)
    for kwargs, field in (({"num_points": 0}, "num_points"), ({"sampling": "grid"}, "sampling"),
                          ({"scale_range": (2, 1)}, "scale_range")):  # fmt: skip
        with pytest.raises(ValueError, match=field):
            PointCloudFeatureExtractor(**kwargs)


def test_save_load_round_trip_and_auto_feature_extractor(tmp_path):
    processor = PointCloudFeatureExtractor(num_points=48, sampling="random", translate_range=0.1)
    processor.save_pretrained(tmp_path)
    loaded = PointCloudFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    points = cloud(300)
    assert torch.equal(loaded(points, seed=1)["point_values"], processor(points, seed=1)["point_values"])
    folder = tmp_path / "model"
    hf_mae.create_model("pointmae-tiny").save_pretrained(folder)
    hf_mae.create_processor("pointmae-tiny").save_pretrained(folder)
    auto = AutoFeatureExtractor.from_pretrained(folder)
    assert type(auto) is PointCloudFeatureExtractor and auto.num_points == 256
    assert auto(points)["point_values"].shape == (1, 256, 3)
