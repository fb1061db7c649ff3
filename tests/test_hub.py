"""Publishing: remote-code folders that load without hf_mae, and `hf-mae push` against an in-memory Hub.

The Hub is tests/hub_server.py (stdlib HTTP server on 127.0.0.1); the client is the real huggingface_hub and
transformers. Fresh-process checks use tests/remote_check.py (``python -I``, ``sys.modules["hf_mae"] = None``)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image
from transformers import AutoModelForPreTraining

import hf_mae
import hf_mae.cli
from hf_mae.hub import check_repo_id, load_run, method_of, model_card, push_run, save_pretrained_with_code
from hf_mae.registry import AUTO_CLASSES, METHODS
from hub_server import serve_hub
from remote_check import run_in_fresh_process

TOKEN = "hf_fake_secret_token_123"
REPO = "org/mae-tiny-digits"
METRICS = {"dataset": "digits", "steps": 300, "train_loss": 0.4123, "linear_probe_accuracy": 0.8765}


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def fixed_inputs():
    """pixel_values (2, 3, 32, 32) and noise (2, 64) for mae-tiny's 8x8 patch grid."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 32, 32, generator=generator), torch.rand(2, 64, generator=generator)


@pytest.fixture(scope="module")
def hub_server():
    with serve_hub() as server:
        yield server


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder shaped like `hf-mae pretrain`'s output, with an untrained mae-tiny (weights are what matter)."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    hf_mae.create_model("mae-tiny").save_pretrained(run)
    hf_mae.create_processor("mae-tiny").save_pretrained(run)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.2}\n{"step": 300, "loss": 0.4123}\n')
    Image.new("RGB", (64, 32), (200, 30, 30)).save(run / "reconstruction.png")
    state = run / "checkpoints" / "step_300"
    state.mkdir(parents=True)
    (state / "optimizer.bin").write_bytes(b"\0" * 64)
    (state / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    return run


@pytest.fixture(scope="module")
def pushed(hub_server, run_dir, tmp_path_factory):
    """`hf-mae push` of run_dir with an explicit token, in a subprocess pointed at the server."""
    home = tmp_path_factory.mktemp("cli")
    env = hub_server.client_env(home / "hf_home")
    command = [sys.executable, "-m", "hf_mae.cli", "push", str(run_dir), REPO, "--token", TOKEN,
               "--commit-message", "first upload"]
    proc = subprocess.run(command, cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, home


def test_save_with_code_loads_without_hf_mae(tmp_path):
    torch.manual_seed(0)
    model = hf_mae.create_model("mae-tiny").eval()
    processor = hf_mae.create_processor("mae-tiny")
    folder = save_pretrained_with_code(model, tmp_path / "remote")

    names = sorted(p.name for p in folder.iterdir())
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "mae.py", "layers.py",
            "image_processing_mae.py"} <= set(names), names
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig"} | {AUTO_CLASSES[t].__name__ for t in METHODS["mae"].model_classes}
    # nothing left registered: a plain save afterwards copies no code and writes no auto_map
    classes = [METHODS["mae"].config_class, *METHODS["mae"].model_classes.values(), METHODS["mae"].processor_class]
    assert all(cls._auto_class is None for cls in classes)
    model.save_pretrained(tmp_path / "plain")
    assert not list((tmp_path / "plain").glob("*.py"))
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())

    x, noise = fixed_inputs()
    images = torch.randint(0, 256, (2, 40, 36, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    pre, base, proc, config, clf = run_in_fresh_process(folder, [
        ("AutoModelForPreTraining", {"pixel_values": x}, {"noise": noise}),
        ("AutoModel", {"pixel_values": x}, {"mask_ratio": 0.0}),
        ("AutoImageProcessor", {"images": images}, None),
        ("AutoConfig", None, None),
        ("AutoModelForImageClassification", {"pixel_values": x}, None),
    ])
    with torch.no_grad():
        expected = model(x, noise=noise)
        features = model.mae(x, mask_ratio=0.0).last_hidden_state
    pixels = processor(images=images.numpy(), return_tensors="pt")["pixel_values"]
    diffs = {"logits": max_diff(pre["logits"], expected.logits), "loss": max_diff(pre["loss"], expected.loss),
             "last_hidden_state": max_diff(base["last_hidden_state"], features),
             "pixel_values": max_diff(proc["pixel_values"], pixels)}
    print("fresh process without hf_mae, max |diff|:", diffs, "| module:", pre.module)
    assert all(d <= 1e-6 for d in diffs.values()), diffs
    assert torch.equal(pre["mask"], expected.mask)
    for out, name in [(pre, "MAEForPreTraining"), (base, "MAEModel"), (proc, "MAEImageProcessor"),
                      (config, "MAEConfig"), (clf, "MAEForImageClassification")]:
        assert out.class_name == name and out.module.startswith("transformers_modules."), (out.class_name, out.module)
    assert clf["logits"].shape == (2, model.config.num_labels)


def test_push_then_load_by_repo_id(hub_server, run_dir, pushed, tmp_path):
    proc, _ = pushed
    files = HfApi(endpoint=hub_server.url).list_repo_files(REPO)
    print("repo files:", files)
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json", "mae.py",
            "reconstruction.png", "metrics.json"} <= set(files)
    assert not [f for f in files if f.startswith("checkpoints")]
    assert hub_server.files(REPO)["model.safetensors"] != b""
    assert REPO in proc.stdout and "/commit/" in proc.stdout

    card = hub_server.files(REPO)["README.md"].decode()
    assert f'AutoModelForPreTraining.from_pretrained("{REPO}", trust_remote_code=True)' in card
    assert "mask_ratio=0.0" in card and "arXiv:2111.06377" in card and "digits" in card
    assert "| linear_probe_accuracy | 0.8765 |" in card and "![reconstruction](reconstruction.png)" in card

    reference = load_run(run_dir)[0]
    x, noise = fixed_inputs()
    with torch.no_grad():
        expected = reference(x, noise=noise)
    # in this process (hf_mae registered, so its classes are used), by repo id through the server
    with hub_server.patched_client(tmp_path / "hf_home"):
        model = AutoModelForPreTraining.from_pretrained(REPO, trust_remote_code=True, cache_dir=tmp_path / "cache")
    with torch.no_grad():
        here = model.eval()(x, noise=noise)
    # in a fresh process without hf_mae: the uploaded code
    remote = run_in_fresh_process(REPO, [("AutoModelForPreTraining", {"pixel_values": x}, {"noise": noise})],
                                  env=hub_server.client_env(tmp_path / "fresh_home"))[0]
    diffs = {"in-process logits": max_diff(here.logits, expected.logits),
             "fresh logits": max_diff(remote["logits"], expected.logits),
             "fresh loss": max_diff(remote["loss"], expected.loss)}
    print("loaded by repo id, max |diff|:", diffs, "| fresh module:", remote.module)
    assert all(d <= 1e-6 for d in diffs.values()), diffs
    assert remote.module.startswith("transformers_modules.")


def test_token_is_used_but_never_written(hub_server, run_dir, pushed):
    proc, home = pushed
    needle = TOKEN.encode()
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    leaked = [str(p) for root in (run_dir, home) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]
    assert leaked == []
    assert not [path for path, data in hub_server.files(REPO).items() if needle in data]
    auth = hub_server.authorization_headers()
    print(f"requests with the token in Authorization: {auth.count(f'Bearer {TOKEN}')} of {len(hub_server.requests)}")
    assert f"Bearer {TOKEN}" in auth
    assert not [r.path for r in hub_server.requests if TOKEN in r.path]


def test_push_python_api_without_code_to_branch(hub_server, run_dir, tmp_path):
    with hub_server.patched_client(tmp_path / "hf_home"):
        commit = push_run(run_dir, "org/no-code", with_code=False, revision="dev")
    files = hub_server.files("org/no-code", "dev")
    assert commit.oid == HfApi(endpoint=hub_server.url).model_info("org/no-code", revision="dev").sha
    assert not [f for f in files if f.endswith(".py")] and "auto_map" not in json.loads(files["config.json"])
    assert "import hf_mae" in files["README.md"].decode() and "trust_remote_code" not in files["README.md"].decode()
    assert hub_server.files("org/no-code", "main") == {}  # the commit went to the branch only


@pytest.mark.parametrize(
    "bad", ["", "name", "org/", "/name", "a/b/c", "org/na me", "org--x/name", "org/name.git", "org/name-", "ör/x"]
)
def test_invalid_repo_id(bad):
    with pytest.raises(ValueError, match="repo_id must look like 'namespace/name'"):
        check_repo_id(bad)


def test_bad_input_gives_clear_errors(hub_server, run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    requests_before = len(hub_server.requests)
    with hub_server.patched_client(tmp_path / "hf_home"):
        with pytest.raises(ValueError, match="has no model to push: missing config.json, model.safetensors"):
            push_run(tmp_path / "empty", "org/x")
        with pytest.raises(ValueError, match="not a folder"):
            push_run(tmp_path / "missing", "org/x")
        with pytest.raises(ValueError, match="repo_id must look like"):
            push_run(run_dir, "org/bad..id")
        assert hf_mae.cli.main(["push", str(tmp_path / "empty"), "org/x"]) == 2
        # a token that found its way into a run file is never uploaded
        leaky = tmp_path / "leaky"
        shutil.copytree(run_dir, leaky, ignore=shutil.ignore_patterns("checkpoints"))
        (leaky / "metrics.json").write_text(json.dumps({"loss": 0.5, "note": TOKEN}))
        with pytest.raises(RuntimeError, match="refusing to upload: metrics.json contains the access token"):
            push_run(leaky, "org/leaky", token=TOKEN)
    assert "hf-mae push: error: run_dir" in capsys.readouterr().err
    assert len(hub_server.requests) == requests_before  # refused before reaching the Hub: no empty repo made
    with pytest.raises(TypeError, match="model must be a transformers PreTrainedModel"):
        save_pretrained_with_code(torch.nn.Linear(2, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ model cards


def card_of(preset: str, task: str, **kwargs) -> str:
    torch.manual_seed(0)
    model = hf_mae.create_model(preset, task=task)
    return model_card("org/x", model, hf_mae.create_processor(preset), method_of(model.config), **kwargs)


def usage_snippet(card: str) -> str:
    return card.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize(
    "preset, task, tag, snippet",
    [
        ("mae-tiny", "pretraining", "image-feature-extraction",
         'model = AutoModelForPreTraining.from_pretrained("org/x", trust_remote_code=True)'),
        ("mae-tiny", "base", "image-feature-extraction",
         'pipeline("image-feature-extraction", model="org/x", trust_remote_code=True)'),
        ("mae-tiny", "image-classification", "image-classification",
         'classifier = pipeline("image-classification", model="org/x", trust_remote_code=True)'),
        ("videomae-tiny", "video-classification", "video-classification",
         'predictions = classifier("clip.mp4")'),
        ("audiomae-tiny", "audio-classification", "audio-classification",
         'classifier({"raw": waveform, "sampling_rate": 16000})'),
        ("audiomae-tiny", "pretraining", None, "AutoModelForPreTraining.from_pretrained"),
        ("pointmae-tiny", "point-cloud-classification", None,
         'model = AutoModelForPointCloudClassification.from_pretrained("org/x", trust_remote_code=True)'),
    ],
)
def test_model_card_metadata_and_usage_follow_the_task(preset, task, tag, snippet):
    from huggingface_hub import ModelCard

    card = card_of(preset, task, dataset="org/data")
    data = ModelCard(card).data.to_dict()  # the YAML front matter, parsed as the Hub parses it
    print(preset, task, data)
    assert data["license"] == "apache-2.0" and data["library_name"] == "transformers"
    assert data.get("pipeline_tag") == tag and data["datasets"] == ["org/data"]
    assert {"hf-mae", "custom_code"} <= set(data["tags"])
    code = usage_snippet(card)
    assert snippet in code
    compile(code, "usage", "exec")  # the snippet is valid Python
    if task.endswith("-classification"):
        assert "AutoModelForPreTraining" not in code and "logits.argmax(-1)" in code
        assert ("pipeline(" in code) == (tag is not None)


def test_model_card_license_and_no_code_snippet():
    from huggingface_hub import ModelCard

    card = card_of("mae-tiny", "image-classification", license="cc-by-nc-4.0", with_code=False)
    data = ModelCard(card).data.to_dict()
    assert data["license"] == "cc-by-nc-4.0" and "custom_code" not in data["tags"] and "datasets" not in data
    code = usage_snippet(card)
    assert code.startswith("import hf_mae") and "trust_remote_code" not in code
    with pytest.raises(ValueError, match="license must be a Hub license id .* got ''"):
        card_of("mae-tiny", "base", license="")
