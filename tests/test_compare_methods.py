"""benchmarks/compare_methods.py: the summary arithmetic, and one tiny end-to-end comparison on an image folder.

The real figures come from running the benchmark; here the script runs a few steps on 100 digits images written as
a ``train/`` + ``test/`` image folder (the layout of ``../shared/data/cifar10``), so that it takes seconds.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import load_benchmark

from hf_mae.files import write_json


@pytest.fixture(scope="module")
def compare():
    return load_benchmark("compare_methods")


def test_mean_std_is_the_mean_and_sample_std_of_the_seeds(compare):
    stat = compare.mean_std([0.5, 0.7, 0.6])
    assert stat["mean"] == pytest.approx(0.6)
    assert stat["std"] == pytest.approx(0.1)  # sqrt(((-0.1)^2 + 0.1^2 + 0) / (3 - 1))
    assert stat["n"] == 3
    assert compare.mean_std([0.8]) == {"mean": 0.8, "std": None, "n": 1}
    assert compare.mean_std([]) == {"mean": None, "std": None, "n": 0}


def fake_row(compare, method, seed, value, random_value):
    """A finished row whose every accuracy is ``value`` (pretrained) and ``random_value`` (random init)."""
    row = {"method": method, "seed": seed, "steps": 10, "epochs": 2.0, "lr": 3e-4, "final_loss": value,
           "pretrain_wall_s": 1.0}
    for key, _ in compare.METRICS:
        row[key], row[f"random_{key}"] = value, random_value
    return row


def test_summary_and_table_from_known_per_seed_numbers(compare):
    rows = [fake_row(compare, "mae", 0, 0.40, 0.30), fake_row(compare, "mae", 1, 0.50, 0.34),
            fake_row(compare, "simmim", 0, 0.20, 0.25), {"method": "simmim", "seed": 1, "error": "ValueError: boom"}]
    summary = compare.summarize(rows, {"mae": 200.0, "simmim": 50.0})
    mae, simmim = summary
    assert mae["seeds"] == [0, 1] and mae["errors"] == []
    assert mae["knn"]["mean"] == pytest.approx(0.45)
    assert mae["knn"]["std"] == pytest.approx(math.sqrt(2 * 0.05**2))  # 0.0707
    assert mae["random_finetune"]["mean"] == pytest.approx(0.32)
    assert mae["random_finetune"]["std"] == pytest.approx(math.sqrt(2 * 0.02**2))
    assert mae["relative_to_mae"] == pytest.approx(1.0)
    # the failed seed is left out of the mean and named
    assert simmim["seeds"] == [0] and simmim["errors"] == ["seed 1: ValueError: boom"]
    assert simmim["linear"] == {"mean": 0.2, "std": None, "n": 1}
    assert simmim["relative_to_mae"] == pytest.approx(0.25)

    table = compare.markdown_table(summary).splitlines()
    assert len(table) == 4 and table[1].count("---|") == table[0].count(" | ") + 1
    assert "| mae | 2 | 2 (10) | 0.0003 | 0.4500 ± 0.0707 | 0.450 ± 0.071 / 0.320 ± 0.028 |" in table[2]
    assert table[2].endswith("| 200 | 1.00x |")
    assert "| simmim | 1 |" in table[3] and "0.200 / 0.250" in table[3]
    assert table[3].endswith("| 50 | 0.25x (error: seed 1: ValueError: boom) |")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """10 train and 3 test digits per class as PNG files in ``<split>/<class>/``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digit-folder")
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        for split, chosen in (("train", members[:10]), ("test", members[10:13])):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in chosen:
                pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
                Image.fromarray(pixels).convert("RGB").save(folder / f"{i}.png")
    return root


def test_end_to_end_on_an_image_folder_with_resume(compare, image_folder, tmp_path, monkeypatch):
    output = tmp_path / "compare"
    argv = ["--methods", "mae", "simmim", "--seeds", "0", "--dataset", str(image_folder), "--epochs", "2",
            "--batch-size", "32", "--finetune-steps", "2", "--output-dir", str(output), "--save-steps", "0",
            "--bench-repeats", "1", "--bench-steps", "1", "--bench-warmup", "0", "--threads", "1"]
    result = compare.main(argv)

    saved = json.loads((output / "compare_methods.json").read_text())
    assert saved["command"] == "python benchmarks/compare_methods.py " + " ".join(argv)
    assert {"cpu", "torch", "nproc", "load_average_end"} <= set(saved["machine"])
    assert saved["pretrain_steps"] == 6  # 2 epochs of 100 images in whole batches of 32
    assert [(row["method"], row["seed"]) for row in saved["rows"]] == [("mae", 0), ("simmim", 0)]
    for row in saved["rows"]:
        assert "error" not in row, row.get("traceback")
        assert row["steps"] == 6 and row["epochs"] == pytest.approx(6 * 32 / 100)
        # each method's own lr (the default rule at batch 32) and its own augmentation
        assert row["lr"] == pytest.approx(compare.default_lr(row["method"], 32))
        scale = "0.2-1" if row["method"] == "mae" else "0.67-1"
        assert row["augmentation"].startswith(f"RandomResizedCrop(scale {scale}")
        for key in ("linear", "linear_10shot", "knn", "finetune", "finetune_best"):
            for value in (row[key], row[f"random_{key}"]):
                assert 0.0 <= value <= 1.0
        assert row["finetune_best"] >= row["finetune"]
        assert json.loads((output / "rows" / f"{row['method']}-seed0.json").read_text()) == row
    mae, simmim = saved["summary"]
    assert mae["linear"] == {"mean": saved["rows"][0]["linear"], "std": None, "n": 1}
    assert mae["relative_to_mae"] == 1.0 and simmim["images_per_s_interleaved"] > 0
    assert (output / "results.md").read_text() == saved["table"] + "\n"
    assert saved["table"].splitlines()[2].startswith("| mae | 1 | 1.9 (6) | 0.00021 |")
    assert result["rows"] == saved["rows"]

    # a rerun with the same output dir takes the finished rows and trains nothing
    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished row was run again")

    monkeypatch.setattr(compare, "run_row", must_not_run)
    again = compare.main(argv + ["--skip-throughput"])
    assert again["rows"] == saved["rows"]
    # --report-only summarises what is there (here: mae), and a row of another budget is refused, not mixed in
    report = compare.main(argv + ["--methods", "mae", "dmjd", "--report-only", "--skip-throughput"])
    assert [row["method"] for row in report["rows"]] == ["mae"]
    assert [entry["seeds"] for entry in report["summary"]] == [[0], []]
    with pytest.raises(ValueError, match="another budget.*finetune_steps.*\\(2, 3\\)"):
        compare.main(argv + ["--finetune-steps", "3"])

    # a row trained at another lr than its method's recipe gives today is stale: run again, and its finished
    # pre-training is trained afresh (overwritten), not reused
    row_file = output / "rows" / "simmim-seed0.json"
    stale_row = dict(json.loads(row_file.read_text()), lr=0.5)
    write_json(row_file, stale_row)
    ran = []
    monkeypatch.setattr(compare, "run_row", lambda method, seed, steps, args: ran.append(method) or saved["rows"][1])
    compare.main(argv + ["--skip-throughput"])
    assert ran == ["simmim"]
    metrics_file = output / "simmim" / "seed0" / "pretrain" / "metrics.json"
    write_json(metrics_file, dict(json.loads(metrics_file.read_text()), lr=0.5))
    calls = []
    monkeypatch.setattr(compare, "pretrain", lambda **kwargs: calls.append(kwargs) or (None, {"lr": 1.0}))
    args = compare.build_parser().parse_args(argv)
    compare.run_pretraining("simmim", 0, 6, metrics_file.parent, args)
    assert calls[0]["overwrite"] and not calls[0]["resume"]
    write_json(metrics_file, dict(json.loads(metrics_file.read_text()), lr=compare.default_lr("simmim", 32)))
    assert compare.run_pretraining("simmim", 0, 6, metrics_file.parent, args)["steps"] == 6  # reused
    assert len(calls) == 1


def test_teacher_folders_reach_only_the_methods_that_have_that_teacher(compare, tmp_path):
    import json as json_module

    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text(json_module.dumps({"model_type": "vit", "hidden_size": 24,
                                                           "num_hidden_layers": 5}))
    (folder / "preprocessor_config.json").write_text(json_module.dumps(
        {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    teachers = compare.parse_teachers([f"teacher={folder}"])
    assert teachers == {"teacher": str(folder.resolve())}
    # I2P-MAE's config has teacher_* fields: the folder replaces its tiny random teacher; MAE has none
    assert compare.teacher_overrides("i2pmae", teachers) == {"teacher_name_or_path": str(folder.resolve()),
                                                              "teacher_config": None}
    assert compare.teacher_overrides("mae", teachers) == {}
    # MR-MAE's tiny teacher is described by sizes and CLIP statistics: they follow the folder's files
    overrides = compare.teacher_overrides("mrmae", teachers)
    assert overrides["teacher_hidden_size"] == 24 and overrides["teacher_image_mean"] == [0.5, 0.5, 0.5]
    assert overrides["teacher_image_std"] == [0.25, 0.25, 0.25] and "second_teacher_name_or_path" not in overrides
    args = compare.build_parser().parse_args(["--teacher", f"teacher={folder}",
                                              "--method-overrides", "dmae:teacher_layers=[5]"])
    assert "teachers" not in compare.budget(args, 10, "mae")  # the rows of teacher-free methods stay valid
    assert compare.budget(args, 10, "i2pmae")["teachers"]["teacher_name_or_path"] == str(folder.resolve())
    assert compare.overrides_for("dmae", 10, args)["teacher_layers"] == [5]
    assert compare.budget(args, 10, "dmae")["method_overrides"] == {"teacher_layers": [5]}
    with pytest.raises(ValueError, match="--method-overrides takes METHOD:KEY=VALUE"):
        compare.parse_method_overrides(["teacher_layers=[5]"])
    with pytest.raises(ValueError, match="unknown config field"):
        compare.parse_method_overrides(["dmae:no_such_field=1"])
    with pytest.raises(ValueError, match="--teacher takes PREFIX=FOLDER items"):
        compare.parse_teachers([str(folder)])
    with pytest.raises(ValueError, match="is no model folder"):
        compare.parse_teachers([f"teacher={tmp_path / 'absent'}"])


def test_teacher_cost_times_the_frozen_teacher_inside_the_step(one_thread):
    script = load_benchmark("teacher_cost")
    assert {"maskalign", "dmae", "mrmae", "hybriddistill"} <= set(script.teacher_methods())
    assert "mae" not in script.teacher_methods()
    result = script.main(["--methods", "maskalign", "--batch-size", "8", "--steps", "1", "--repeats", "2",
                          "--warmup", "1"])["results"]["maskalign"]
    # the hooks saw the teacher run inside the step, and it is a part of the step, not all of it
    assert result["teachers"] == ["teacher"] and 0 < result["teacher_ms"] < result["step_ms"]
    assert 0 < result["teacher_share"] < 1 and result["cache_speedup_at_most"] > 1
    with pytest.raises(ValueError, match="no image methods with a frozen teacher"):
        script.main(["--methods", "mae"])
    with pytest.raises(ValueError, match="cae-tiny holds no frozen teacher"):  # its pixel target needs no tokenizer
        script.main(["--methods", "cae", "--batch-size", "8", "--steps", "1", "--repeats", "1", "--warmup", "1"])
