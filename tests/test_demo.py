"""The quick start's main job (`hf-mae demo`), shortened: it pretrains, writes the run folder and the probe table."""

import json

from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.cli import main
from hf_mae.training import probe as probe_module


def test_demo_writes_a_loadable_run_and_probe_results(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out), "--steps", "30"]) == 0
    printed = capsys.readouterr().out
    assert "linear probe:" in printed and "random init" in printed
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "reconstruction.png", "probe.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "probe.json").read_text())
    assert set(results) == {"linear", "linear_10_per_class", "knn"}
    assert all(0.0 <= row[kind] <= 1.0 for row in results.values() for kind in ("pretrained", "random"))
    assert results["linear"]["pretrained"] > 0.5  # chance is 0.1
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 30 and summary["final_loss"] < summary["first_loss"]
    assert isinstance(AutoModelForPreTraining.from_pretrained(out), hf_mae.MAEForPreTraining)
    # running it again replaces the earlier demo instead of refusing (probes stubbed: they are checked above)
    monkeypatch.setattr(probe_module, "probe", lambda *args, **kwargs: {m: {"pretrained": 1.0, "random": 0.0}
                                                                         for m in ("linear", "knn")})  # fmt: skip
    assert main(["demo", "--output-dir", str(out), "--steps", "2"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert json.loads((out / "probe.json").read_text())["knn"] == {"pretrained": 1.0, "random": 0.0}
