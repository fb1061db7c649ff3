"""``hf-mae pretrain`` end to end for the point-cloud and graph methods: bundled procedural shapes, a folder of point
files (.npy / .ply / .off), and Cora's Planetoid files as one graph; the run folder loads back with the Auto classes."""

import numpy as np
import pytest
import torch
from conftest import run_pretrain, shared_data
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.processors.graph_processing import load_planetoid
from hf_mae.training.data import collate, load_image_dataset, with_model_inputs
from hf_mae.training.shapes import make_shapes


def _write_ply(path, points):
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    path.write_text(header + "".join(f"{x} {y} {z}\n" for x, y, z in points))


def _write_off(path, points):
    path.write_text(f"OFF\n{len(points)} 0 0\n" + "".join(f"{x} {y} {z}\n" for x, y, z in points))


@pytest.fixture(scope="module")
def point_folder(tmp_path_factory):
    """<folder>/<class>/<i>.{npy,ply,off}: 8 clouds of 300 points for each of two shape classes."""
    folder = tmp_path_factory.mktemp("clouds")
    points, labels = make_shapes(8, num_points=300, seed=1, classes=["sphere", "cube"])
    writers = {".npy": lambda path, cloud: np.save(path, cloud), ".ply": _write_ply, ".off": _write_off}
    for i, (cloud, label) in enumerate(zip(points, labels)):
        extension = list(writers)[i % 3]
        (folder / str(label)).mkdir(exist_ok=True)
        writers[extension](folder / str(label) / f"{i}{extension}", cloud)
    return folder, points, labels


def test_a_folder_of_point_files_loads_through_the_processor(point_folder):
    folder, points, labels = point_folder
    dataset = load_image_dataset(str(folder))
    assert len(dataset) == 16 and sorted(set(dataset["label"])) == [0, 1]
    processor = hf_mae.create_processor("pointmae-tiny")
    batch = collate([with_model_inputs(dataset, processor)[i] for i in range(4)])
    assert batch["point_values"].shape == (4, processor.num_points, 3) and batch["labels"].shape == (4,)
    # every file format gives the cloud that was written (to the text files' 6-7 significant digits)
    expected = processor([points[i] for i in range(16)], return_tensors="pt")["point_values"]
    order = [int(path.rsplit("/", 1)[1].split(".")[0]) for path in dataset["points"]]
    torch.testing.assert_close(collate([with_model_inputs(dataset, processor)[i] for i in range(16)])["point_values"],
                               expected[order], rtol=0, atol=1e-5)  # fmt: skip


# measured: Point-MAE's Chamfer 0.33 -> 0.036; I2P-MAE's Chamfer + 2-D feature MSE 0.86 -> 0.76 (the regression of
# a random teacher's features moves slowly)
@pytest.mark.parametrize("preset,dataset,ratio", [("pointmae-tiny", "shapes", 0.5), ("i2pmae-tiny", "folder", 0.93)])
def test_pretrain_point_cloud_methods_from_the_cli(preset, dataset, ratio, point_folder, tmp_path, one_thread):
    data = "shapes" if dataset == "shapes" else str(point_folder[0])
    records = run_pretrain(["--model", preset, "--dataset", data, "--batch-size", "8", "--max-steps", "80",
                            "--log-steps", "10", "--save-steps", "40"], tmp_path)  # the recipe's lr, 1e-3  # fmt: skip
    first, last = records[0]["loss"], records[-1]["loss"]
    print(f"{preset} on {dataset}: loss {first:.4f} -> {last:.4f}")
    assert last < ratio * first
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_40", "step_80"]
    model = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(model) is hf_mae.registry.PRESETS[preset].model_classes["pretraining"]
    processor = AutoFeatureExtractor.from_pretrained(tmp_path)
    clouds = processor(list(make_shapes(1, num_points=500, seed=3)[0]), return_tensors="pt")
    features = AutoModel.from_pretrained(tmp_path).eval()(**clouds, mask_ratio=0.0).last_hidden_state
    assert features.shape[0] == len(clouds["point_values"]) and torch.isfinite(features).all()


def test_pretrain_graphmae_on_cora_from_the_cli(tmp_path, one_thread):
    """The whole Planetoid graph is one example (--batch-size 1: one step per epoch); the input layer is sized to
    Cora's 1433 features from the data."""
    root = shared_data("planetoid")
    records = run_pretrain(["--model", "graphmae-tiny", "--dataset", str(root), "--batch-size", "1",
                            "--max-steps", "40", "--lr", "1e-2", "--log-steps", "5"], tmp_path)  # fmt: skip
    first, last = records[0]["loss"], records[-1]["loss"]
    print(f"graphmae-tiny on Cora: SCE loss {first:.4f} -> {last:.4f}")
    assert last < 0.8 * first
    model = AutoModel.from_pretrained(tmp_path).eval()
    assert model.config.num_features == 1433
    processor = AutoFeatureExtractor.from_pretrained(tmp_path)
    graph = load_planetoid(root)
    inputs = processor(graph, return_tensors="pt")
    assert inputs["node_features"].shape == (2708, 1433)
    assert model(inputs["node_features"], inputs["edge_index"]).last_hidden_state.shape[0] == 2708


def test_methods_with_their_own_lr_ignore_batch_scaling():
    from hf_mae.training.pretrain import build_parser, resolve_lr

    def lr(*argv):
        args = build_parser().parse_args(["--model", argv[0], "--dataset", "x", "--output-dir", "y", *argv[1:]])
        return resolve_lr(args, effective_batch=args.batch_size)

    assert lr("graphmae-tiny", "--batch-size", "1") == lr("pointmae-tiny") == 1e-3  # the recipes' absolute lr
    assert lr("graphmae-tiny", "--lr", "0.01") == 0.01
    assert lr("graphmae-tiny", "--base-lr", "0.256", "--batch-size", "1") == 0.001  # an explicit base lr is scaled
    # below MAE's batch of 4096 its lr 2.4e-3 scales with the square root of the batch
    assert lr("mae-tiny", "--batch-size", "128") == pytest.approx(2.4e-3 * (128 / 4096) ** 0.5)


def test_probe_and_finetune_a_pretrained_point_mae(tmp_path, one_thread):
    """hf-mae probe (the run's feature extractor; max-pooled groups stand in for a cls token) and hf-mae finetune
    (Trainer, AutoModelForPointCloudClassification) on a Point-MAE run."""
    from hf_mae.training.finetune import finetune
    from hf_mae.training.pretrain import pretrain
    from hf_mae.training.probe import probe

    run, _ = pretrain(model="pointmae-tiny", dataset="shapes", output_dir=tmp_path / "run", batch_size=32,
                      max_steps=100, save_steps=0, log_steps=50)  # fmt: skip
    results = probe(run, "shapes", ("linear", "knn"), baseline="random")
    print(f"Point-MAE probes on shapes: {results}")
    # measured (this 100-step run): linear 0.639 vs 0.309, kNN 0.578 vs 0.111 (chance 0.125)
    for method in ("linear", "knn"):
        assert results[method]["pretrained"] > results[method]["random"] + 0.15, method
    metrics = finetune(run, "shapes", tmp_path / "ft", max_steps=80, batch_size=32, lr=1e-3, drop_path=0.0,
                       max_eval_samples=256, disable_tqdm=True)  # fmt: skip
    print(f"Point-MAE fine-tuned on shapes: eval accuracy {metrics['eval_accuracy']:.3f} (chance 0.125)")
    assert metrics["eval_accuracy"] > 0.6  # measured 0.785 (150-step run, 512 eval clouds)
    classifier = hf_mae.AutoModelForPointCloudClassification.from_pretrained(tmp_path / "ft")
    assert type(classifier).__name__ == "PointMAEForPointCloudClassification" and classifier.config.num_labels == 8
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path / "ft")).__name__ == "PointCloudFeatureExtractor"


def test_finetune_refuses_what_it_cannot_do(tmp_path):
    from hf_mae.training.finetune import finetune

    graph_run = tmp_path / "graph"
    hf_mae.create_model("graphmae-tiny").save_pretrained(graph_run)
    with pytest.raises(ValueError, match="graphmae .graph. has the tasks"):
        finetune(graph_run, "shapes", tmp_path / "a")
    i2p_run = tmp_path / "i2p"
    hf_mae.create_model("i2pmae-tiny").save_pretrained(i2p_run)
    with pytest.raises(ValueError, match="layer_decay=0.75 needs an encoder with one stack of blocks"):
        finetune(i2p_run, "shapes", tmp_path / "b", max_steps=1, layer_decay=0.75)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_default_layer_decay_is_off_for_encoders_without_one_stack_of_blocks():
    from hf_mae.training.finetune import layer_decay_param_groups

    i2p = hf_mae.create_model("i2pmae-tiny", task="point-cloud-classification")
    assert {group["lr"] for group in layer_decay_param_groups(i2p, 1e-3, 0.05)} == {1e-3}
    mae = hf_mae.create_model("mae-tiny", task="image-classification")
    lrs = sorted({group["lr"] for group in layer_decay_param_groups(mae, 1e-3, 0.05)})
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 * 0.75 ** (mae.config.num_hidden_layers + 1))


def test_planetoid_folders_are_recognised(tmp_path):
    """A folder with several Planetoid data sets asks for one; ``<folder>/ind.<name>`` picks it; the graph is one row."""
    import shutil

    raw = tmp_path / "raw"
    raw.mkdir()
    for path in shared_data("planetoid").joinpath("raw").glob("ind.cora.*"):
        shutil.copy(path, raw / path.name)
    (raw / "ind.citeseer.x").write_bytes(b"")  # a second data set, named by its first file
    several = r"several Planetoid data sets \['citeseer', 'cora'\]; pass one as .*raw/ind\.cora'"
    with pytest.raises(ValueError, match=several):
        load_image_dataset(str(tmp_path))
    dataset = load_image_dataset(str(raw / "ind.cora"), "test")  # every split is the whole graph
    assert len(dataset) == 1 and len(dataset[0]["labels"]) == 2708 and sum(dataset[0]["test_mask"]) == 1000
