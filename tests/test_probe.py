"""hf-mae probe: frozen features of the pretrained mae-tiny against a random-init encoder of the same config,
with linear, kNN and attentive probes on digits."""

import json

import pytest

from hf_mae.cli import main
from hf_mae.training.probe import METHODS, probe


def test_probes_pretrained_vs_random(pretrained_mae, tmp_path):
    folder, _ = pretrained_mae
    out = tmp_path / "probe.json"
    results = probe(folder, "digits", "all", baseline="random", output=out)
    for method, row in results.items():
        print(f"{method:>9} probe on digits: pretrained {row['pretrained']:.3f} vs random init {row['random']:.3f}")
    assert json.loads(out.read_text()) == results
    assert set(results) == set(METHODS) and all(set(row) == {"pretrained", "random"} for row in results.values())

    # Measured with the 800-step fixture (random init: seed 0): linear 0.967 vs 0.944, kNN 0.956 vs 0.694,
    # attentive 0.958 vs 0.553 (chance 0.1). Digits are nearly linearly separable even in a random ViT's
    # features, hence the small linear gap; it is deterministic here (seeded fixture and baseline).
    assert results["linear"]["pretrained"] > results["linear"]["random"] + 0.01
    assert results["linear"]["pretrained"] > 0.9
    assert results["knn"]["pretrained"] > 0.85
    assert results["knn"]["pretrained"] > results["knn"]["random"] + 0.15
    assert results["attentive"]["pretrained"] > 0.8
    assert results["attentive"]["pretrained"] > results["attentive"]["random"] + 0.15


def test_low_shot_linear_probe_beats_random_init(pretrained_mae, tmp_path):
    folder, _ = pretrained_mae
    out = tmp_path / "low_shot.json"
    argv = ["probe", str(folder), "--dataset", "digits", "--method", "linear", "--baseline", "random",
            "--shots", "2", "--output", str(out)]
    assert main(argv) == 0
    row = json.loads(out.read_text())["linear"]
    print(f"2-shot linear probe on digits: pretrained {row['pretrained']:.3f} vs random init {row['random']:.3f}")
    # measured: pretrained 0.803 vs random 0.469 (800-step fixture); with a 300-step one, over 8 draws x 3 seeds,
    # 0.64 vs 0.43 on average with the smallest gap 0.15
    assert row["pretrained"] > row["random"] + 0.15


def test_bad_arguments_name_the_valid_choices(pretrained_mae, tmp_path):
    folder, _ = pretrained_mae
    with pytest.raises(ValueError, match="valid methods: linear, knn, attentive"):
        probe(folder, "digits", ["linear", "svm"])
    with pytest.raises(ValueError, match="baseline"):
        probe(folder, "digits", "linear", baseline="imagenet")
    with pytest.raises(ValueError, match="pooling"):
        probe(folder, "digits", "linear", pooling="max")
    with pytest.raises(ValueError, match="shots"):
        probe(folder, "digits", "linear", shots=0)
    with pytest.raises(ValueError, match="neither a folder nor a Hub id"):
        probe(tmp_path / "missing", "digits", "linear")
