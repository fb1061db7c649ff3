"""benchmarks/cifar_teacher.py: the cached CIFAR-10 MAE teacher. A tiny run of the command writes a whole hf-mae
folder (or nothing), which AutoModel loads as the encoder and I2P-MAE takes as ``teacher_name_or_path``: the teacher
it builds holds exactly the saved weights and the forward gives a finite loss."""

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hf_mae
from hf_mae import files
from conftest import load_benchmark, shared_data

TINY = ["hidden_size=32", "num_hidden_layers=1", "num_attention_heads=2", "intermediate_size=64",
        "decoder_hidden_size=32", "decoder_num_hidden_layers=1", "decoder_intermediate_size=64"]


@pytest.fixture
def small_cifar(tmp_path):
    """40 CIFAR-10 training images (4 per class) in an image folder: the loader's index of 5,000 files takes seconds."""
    source = shared_data("cifar10") / "train"
    folder = tmp_path / "cifar"
    for class_dir in sorted(source.iterdir()):
        (folder / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:4]:
            shutil.copy(image, folder / class_dir.name / image.name)
    return folder


def test_tiny_teacher_folder_loads_and_serves_as_the_i2pmae_teacher(small_cifar, tmp_path, one_thread):
    from transformers import AutoModel

    script = load_benchmark("cifar_teacher")
    output = tmp_path / "teachers" / "mae-cifar10"
    argv = ["--output", str(output), "--dataset", str(small_cifar), "--size", "tiny", "--config-overrides", *TINY,
            "--max-steps", "3", "--batch-size", "8"]
    assert script.main(argv) == output.resolve()
    assert {p.name for p in output.iterdir()} >= set(script.COMPLETE)
    assert [p.name for p in output.parent.iterdir()] == ["mae-cifar10"]  # no temporary folder left behind
    saved = load_file(output / "model.safetensors")

    encoder = AutoModel.from_pretrained(output)
    assert isinstance(encoder, hf_mae.MAEModel) and encoder.config.hidden_size == 32
    encoder_state = encoder.state_dict()
    assert all(torch.equal(encoder_state[k], saved["mae." + k]) for k in encoder_state)

    config = hf_mae.create_config("i2pmae-tiny", teacher_name_or_path=str(output), teacher_config=None,
                                  teacher_feature_dim=32)
    model = hf_mae.I2PMAEForPreTraining(config)
    points = torch.rand(2, config.num_points, 3) * 2 - 1
    loss = model(point_values=points).loss
    print(f"I2P-MAE loss with the CIFAR-10 teacher: {loss.item():.4f}")
    assert torch.isfinite(loss)
    teacher_state = model.get_teacher(torch.device("cpu")).state_dict()
    assert teacher_state.keys() == encoder_state.keys()
    assert all(torch.equal(teacher_state[k], saved["mae." + k]) for k in teacher_state)

    # a complete folder is kept as it is; --force trains again
    stamp = (output / "model.safetensors").stat().st_mtime_ns
    script.main(argv)
    assert (output / "model.safetensors").stat().st_mtime_ns == stamp
    # ... and removes the staging folder a killed build left beside it
    prefix, suffix = files._staging_affixes(output)
    killed = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=output.parent))
    (killed / "mae-cifar10").mkdir()
    script.main([*argv, "--force", "--seed", "1"])
    retrained = load_file(output / "model.safetensors")
    assert not torch.equal(retrained["mae.embeddings.cls_token"], saved["mae.embeddings.cls_token"])
    assert [p.name for p in output.parent.iterdir()] == ["mae-cifar10"]


def test_an_incomplete_folder_is_refused_without_force(tmp_path):
    script = load_benchmark("cifar_teacher")
    output = tmp_path / "teacher"
    output.mkdir()
    (output / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="exists but is not a complete teacher .* pass --force"):
        script.main(["--output", str(output), "--dataset", str(tmp_path)])
    with pytest.raises(ValueError, match="holds something else than a model folder"):  # --force deletes no data
        script.main(["--output", str(tmp_path), "--dataset", str(tmp_path), "--force"])
    assert (output / "config.json").exists()


def test_supervised_teacher_is_the_mae_teacher_fine_tuned_on_the_labels(small_cifar, tmp_path, one_thread):
    from transformers import AutoModel

    script = load_benchmark("cifar_teacher")
    mae = tmp_path / "teachers" / "mae-cifar10"
    script.main(["--output", str(mae), "--dataset", str(small_cifar), "--size", "tiny", "--config-overrides", *TINY,
                 "--max-steps", "2", "--batch-size", "8"])
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    shutil.copytree(small_cifar, labelled / "train")  # the data set loader does not follow symbolic links
    shutil.copytree(small_cifar, labelled / "test")
    supervised = tmp_path / "teachers" / "supervised"
    argv = ["--supervised", "--source", str(mae), "--output", str(supervised), "--labelled-dataset", str(labelled),
            "--finetune-epochs", "1", "--batch-size", "8"]
    assert script.main(argv) == supervised.resolve()
    assert {p.name for p in supervised.iterdir()} >= set(script.COMPLETE)
    record = __import__("json").loads((supervised / "teacher.json").read_text())
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["source"] == str(mae.resolve())
    # the encoder loads with AutoModel, and fine-tuning moved it away from the MAE weights
    tuned, start = AutoModel.from_pretrained(supervised), AutoModel.from_pretrained(mae)
    assert isinstance(tuned, hf_mae.MAEModel)
    moved = max((a - b).abs().max().item() for (name, a), b in zip(tuned.named_parameters(), start.parameters())
                if name.startswith("layers"))
    assert moved > 1e-6  # 5 steps at the fine-tuning lr with layer decay move the blocks a little
    assert sorted(p.name for p in supervised.parent.iterdir()) == ["mae-cifar10", "supervised"]
    with pytest.raises(ValueError, match="--source .* is not a complete MAE teacher"):
        script.main([*argv[:2], str(tmp_path / "nothing"), *argv[3:]])
