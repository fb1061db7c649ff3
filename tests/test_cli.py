"""The ``hf-mae`` command line as a user meets it: bad arguments are one line naming the argument, the value and
what is allowed (exit 2, no traceback; ``--debug`` shows it), ``--config-overrides`` values are typed by the config,
help shows the defaults, probe and embed-segments show progress. Argument errors come before any model is built or
data is loaded, so these tests are fast; the few subprocess runs check the real entry point."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hf_mae
from hf_mae import cli
from hf_mae.training import arguments
from hf_mae.training.arguments import check_model_path, parse_config_overrides

ROOT = Path(__file__).resolve().parents[1]
TINY = ["hidden_size=32", "num_hidden_layers=1", "intermediate_size=64", "decoder_hidden_size=32",
        "decoder_num_hidden_layers=1", "decoder_intermediate_size=64"]  # fmt: skip


def run_cli(*argv, cwd) -> subprocess.CompletedProcess:
    """``python -m hf_mae.cli ARGV`` in a fresh process, offline, one thread."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "hf_mae.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture
def no_data(monkeypatch):
    """Makes loading any data set fail loudly: an argument error must come before it."""
    from hf_mae.training import data

    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the arguments were checked")

    monkeypatch.setattr(data, "load_image_dataset", refuse)


def cli_error(capsys, *argv) -> tuple[int, str]:
    """(exit code, stderr) of ``hf-mae ARGV`` run in this process as the command line runs it."""
    try:
        code = cli.main(list(argv), report_errors=True)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------- the real entry point


def test_bad_argument_exits_2_with_one_line_and_no_traceback(tmp_path):
    # the case: this was a TypeError from string formatting inside MAEConfig (a subprocess costs ~7 s of
    # imports, so the other cases run in this process, through the same main())
    proc = run_cli("pretrain", "--model", "mae-tiny", "--dataset", "digits", "--output-dir", "out",
                   "--config-overrides", "hidden_size=abc", cwd=tmp_path)
    print(proc.stderr)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["hf-mae pretrain: error: --config-overrides: hidden_size='abc' is not a valid "
                                        "int (the type of MAEConfig.hidden_size)"]  # fmt: skip
    assert os.listdir(tmp_path) == []  # no run folder


def test_typed_overrides_land_typed_in_config_json(tmp_path):
    proc = run_cli("pretrain", "--model", "mae-tiny", "--dataset", "digits", "--output-dir", tmp_path / "run",
                   "--max-steps", "1", "--batch-size", "8", "--save-steps", "0", "--report-to", "none",
                   "--config-overrides", *TINY, "norm_pix_loss=false", "layer_norm_eps=1e-5", "hidden_act=gelu",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["hidden_size"] == 32 and type(config["hidden_size"]) is int
    assert config["norm_pix_loss"] is False and config["layer_norm_eps"] == 1e-5 and config["hidden_act"] == "gelu"
    saved = json.loads((tmp_path / "run" / "run_args.json").read_text())["config_overrides"]
    assert saved["norm_pix_loss"] is False and saved["num_hidden_layers"] == 1 and saved["layer_norm_eps"] == 1e-5


# ------------------------------------------------------------------------------------------- in this process


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["pretrain", "--max-steps", "-3"], "argument --max-steps: must be >= 1, got -3"),
        (["pretrain", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["pretrain", "--lr", "abc"], "argument --lr: expected a number, got 'abc'"),
        (["pretrain", "--mask-ratio", "1.5"], "argument --mask-ratio: must be >= 0 and < 1, got 1.5"),
        (["pretrain", "--config-overrides", "norm_pix_loss=maybe"],
         "--config-overrides: norm_pix_loss='maybe' is not a valid bool"),
        (["pretrain", "--config-overrides", "hidden_sise=3"],
         "--config-overrides: unknown config field(s) ['hidden_sise'] for MAEConfig; allowed: "),
        (["pretrain", "--config-overrides", "hidden_size"], "--config-overrides takes KEY=VALUE items, got 'hidden_size'"),
        (["pretrain", "--model", "mae-nope"], "unknown model 'mae-nope'"),
        (["finetune", "x", "--epochs", "-3"], "argument --epochs: must be > 0, got -3"),
        (["finetune", "x", "--max-steps", "-3"], "argument --max-steps: must be >= 1, got -3"),
        (["finetune", "./no-such-run"], "pretrained_dir './no-such-run' is not a folder (nothing exists at that path)"),
        (["finetune", "x", "--warmup-ratio", "2"], "argument --warmup-ratio: must be >= 0 and < 1, got 2"),
        (["finetune", "x", "--layer-decay", "0"], "argument --layer-decay: must be > 0 and <= 1, got 0"),
        (["probe", "./no-such-run"], "model_dir './no-such-run' is not a folder (nothing exists at that path)"),
        (["probe", "a/b/c"], "model_dir 'a/b/c' is not a folder"),
        (["probe", "run", "--shots", "0"], "argument --shots: must be >= 1, got 0"),
        (["visualize", "./no-such-run"], "model './no-such-run' is not a folder (nothing exists at that path)"),
        (["visualize", "runs/x/", "--dataset", "digits"], "model 'runs/x/' is not a folder"),
        (["visualize", "mae-tiny", "--num-samples", "0"], "argument --num-samples: must be >= 1, got 0"),
        (["embed-segments", "v.mp4", "--encoder", "e", "--cache-dir", "c", "--segment-seconds", "0"],
         "argument --segment-seconds: must be > 0, got 0"),
        (["embed-segments", "./no-such-video.mp4", "--encoder", "e", "--cache-dir", "c"],
         "videos: './no-such-video.mp4' is neither a video file nor a folder"),
    ],
)
def test_argument_errors_name_the_argument_value_and_range(capsys, tmp_path, monkeypatch, no_data, argv, expected):
    monkeypatch.chdir(tmp_path)
    command, rest = argv[0], argv[1:]
    if command == "pretrain":  # the required arguments, unless the case sets them
        given = set(rest)
        rest = [*rest, *(["--model", "mae-tiny"] if "--model" not in given else []), "--dataset", "digits",
                "--output-dir", "out"]  # fmt: skip
    elif command == "finetune":
        rest = [*rest, "--dataset", "digits", "--output-dir", "out"]
    code, err = cli_error(capsys, command, *rest)
    print(err.strip().splitlines()[-1])
    assert code == 2 and "Traceback" not in err and "huggingface.co" not in err
    assert err.strip().splitlines()[-1].startswith(f"hf-mae {command}: error: {expected}")
    assert os.listdir(tmp_path) == []


def test_debug_shows_the_traceback_and_unexpected_errors_say_so(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    argv = ["finetune", "./missing", "--dataset", "digits", "--output-dir", "out"]
    with pytest.raises(ValueError, match="pretrained_dir './missing' is not a folder"):
        cli.main([*argv, "--debug"], report_errors=True)
    with pytest.raises(ValueError, match="is not a folder"):  # `hf-mae --debug finetune ...` too
        cli.main(["--debug", *argv], report_errors=True)
    with pytest.raises(ValueError, match="is not a folder"):  # from Python with a list, exceptions propagate
        cli.main(argv)

    def broken(args):
        return {}["missing key"]  # an internal bug, not a user error

    monkeypatch.setattr("hf_mae.training.probe.run", broken)
    code, err = cli_error(capsys, "probe", "run")
    assert code == 1 and "Traceback" not in err
    assert err.splitlines() == ["hf-mae probe: error: KeyError: 'missing key'",
                                "(an unexpected error; run again with --debug to see the traceback)"]  # fmt: skip

    def library_value_error(args):
        return json.loads("{")  # a ValueError raised outside hf-mae's own checks is not called a usage error

    monkeypatch.setattr("hf_mae.training.probe.run", library_value_error)
    code, err = cli_error(capsys, "probe", "run")
    assert code == 1 and err.startswith("hf-mae probe: error: JSONDecodeError: ") and "run again with --debug" in err


def test_help_shows_the_defaults(capsys):
    for command, expected in [
        ("pretrain", ["--batch-size BATCH_SIZE", "(default: 64)", "sqrt(batch / paper_batch)", "(default: auto)"]),
        ("finetune", ["(default: 10.0)", "(default: 0.75)", "(default: train)"]),
        ("probe", ["(default: digits)", "(default: linear)", "(default: 256)", "(default: mean)"]),
        ("embed-segments", ["(default: 5.0)", "(default: 8)", "(default: 16)"]),
    ]:
        with pytest.raises(SystemExit) as stop:
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert stop.value.code == 0
        assert all(text in " ".join(out.split()) for text in expected), (command, out)
        assert "(default: None)" not in out and "(default: False)" not in out


# ---------------------------------------------------------------------------------------- the building blocks


def test_override_values_are_typed_by_the_config_field():
    config_class = hf_mae.MAEConfig
    parsed = parse_config_overrides(
        ["hidden_size=32", "norm_pix_loss=False", "qkv_bias=yes", "mask_ratio=0.5", "image_size=16,32",
         "patch_size=[4, 8]", "hidden_act=gelu", "layer_norm_eps=1e-5", "num_labels=3"], config_class)  # fmt: skip
    assert parsed == {"hidden_size": 32, "norm_pix_loss": False, "qkv_bias": True, "mask_ratio": 0.5,
                      "image_size": [16, 32], "patch_size": [4, 8], "hidden_act": "gelu", "layer_norm_eps": 1e-5,
                      "num_labels": 3}  # fmt: skip
    assert type(parsed["hidden_size"]) is int and type(parsed["mask_ratio"]) is float
    assert parse_config_overrides(["image_size=24"], config_class) == {"image_size": 24}  # int before list
    assert parse_config_overrides(["output_hidden_states=none"], config_class) == {"output_hidden_states": None}
    assert parse_config_overrides(["problem_type=regression"], config_class) == {"problem_type": "regression"}
    for item, message in [
        ("hidden_size=3.5", r"hidden_size='3.5' is not a valid int"),
        ("mask_ratio=half", r"mask_ratio='half' is not a valid float \(the type of MAEConfig.mask_ratio\)"),
        ("problem_type=ranking", r"problem_type='ranking' is not a valid Optional\[Literal\['regression'"),
        ("image_size=a,b", r"image_size='a,b' is not a valid int \| list\[int\] \| tuple\[int, int\]"),
        ("norm_pix_loss=2", r"norm_pix_loss='2' is not a valid bool"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_config_overrides([item], config_class)
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['hidden'\] for MAEConfig; allowed: .*hidden_size"):
        parse_config_overrides(["hidden=3"], config_class)
    assert parse_config_overrides({"hidden_size": "kept as given"}, config_class) == {"hidden_size": "kept as given"}


def test_model_paths_that_look_local_are_not_sent_to_the_hub(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    assert check_model_path(tmp_path, "model") == str(tmp_path)
    assert check_model_path("org/name", "model") == "org/name" and check_model_path("gpt2", "model") == "gpt2"
    for path, reason in [(tmp_path / "missing", "nothing exists at that path"), (tmp_path / "file.txt", "it is a file"),
                         ("./run", "nothing exists"), ("~/runs/x", "nothing exists"), ("a/b/c", "nothing exists")]:
        with pytest.raises(ValueError, match=rf"model '.*' is not a folder \({reason}"):
            check_model_path(path, "model")
    with pytest.raises(ValueError, match="'org/na me' is neither a local folder nor a Hub id"):
        check_model_path("org/na me", "model")


def test_a_missing_local_dataset_is_not_looked_up_on_the_hub(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, "pretrain", "--model", "mae-tiny", "--dataset", "./no-such-data", "--output-dir",
                          "out", "--max-steps", "1")  # fmt: skip
    assert code == 2 and "Hub" not in err and "huggingface.co" not in err
    assert err.splitlines() == ["hf-mae pretrain: error: dataset './no-such-data' is not a folder (nothing exists at "
                                "that path); expected a bundled data set (digits, shapes, sprites), a local folder, "
                                "or a Hugging Face dataset id (org/name)"]  # fmt: skip
    assert os.listdir(tmp_path) == []


def test_range_checks_name_the_argument():
    assert arguments.check_range("lr", 0.1, minimum=0, strict=True) == 0.1
    assert arguments.check_range("lr", None, minimum=0, strict=True) is None
    with pytest.raises(ValueError, match=r"^lr must be > 0, got 0$"):
        arguments.check_range("lr", 0, minimum=0, strict=True)
    with pytest.raises(ValueError, match=r"^drop_path must be >= 0 and < 1, got nan$"):
        arguments.check_range("drop_path", float("nan"), minimum=0, maximum=1, open_max=True)
    with pytest.raises(TypeError, match="epochs must be a number, got str '3'"):
        arguments.check_range("epochs", "3", minimum=0)


def test_finetune_api_refuses_bad_numbers_before_touching_anything(tmp_path):
    from hf_mae.training.finetune import finetune

    for name, value, message in [("epochs", -3, "epochs must be > 0, got -3"),
                                 ("max_steps", -3, r"max_steps \(-1: use epochs\) must be >= 1, got -3"),
                                 ("warmup_ratio", 1.0, "warmup_ratio must be >= 0 and < 1, got 1.0"),
                                 ("batch_size", 0, "batch_size must be >= 1, got 0")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            finetune(tmp_path / "missing", "digits", tmp_path / "out", **{name: value})
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------------------------- progress


def test_probe_feature_extraction_shows_progress(capsys):
    from hf_mae.training.probe import extract_tokens

    torch.manual_seed(0)
    encoder = hf_mae.create_model("mae-tiny", task="base")
    tokens = extract_tokens(encoder, torch.randn(5, 3, 32, 32), batch_size=2, desc="pretrained features, train")
    err = capsys.readouterr().err
    assert tokens.shape[0] == 5 and "pretrained features, train" in err and "0/3" in err
    extract_tokens(encoder, torch.randn(2, 3, 32, 32), batch_size=2)  # no desc: quiet (the Python API default)
    assert capsys.readouterr().err == ""


def test_embed_segments_shows_progress(tmp_path, capsys):
    from hf_mae.training.segment_embeddings import SegmentEmbedder

    vit = {"model_type": "vit", "image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
           "num_attention_heads": 2, "intermediate_size": 32}  # fmt: skip
    embedder = SegmentEmbedder(vit, segment_seconds=1.0, frames_per_segment=2, fps=4)
    frames = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    report = embedder.cache({"a": frames, "b": frames}, tmp_path / "cache", progress=True)
    err = capsys.readouterr().err
    assert report["computed"] == 2 and "embed-segments" in err and "2/2" in err
