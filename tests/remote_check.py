"""Load a saved (or pushed) hf-mae model in a fresh Python in which ``hf_mae`` cannot be imported, run it, and bring
its outputs back: the proof that a folder loads with plain ``transformers`` and ``trust_remote_code=True``.

    out = load_in_fresh_process(folder, "AutoModelForPreTraining", {"pixel_values": x}, {"noise": noise})
    torch.testing.assert_close(out["logits"], model(x, noise=noise).logits)
    assert out.module.startswith("transformers_modules.")      # the copied code ran, not hf_mae

The child runs ``python -I`` (no PYTHONPATH, no user site) in a temporary cwd outside the repo, with a fresh HF_HOME,
``sys.modules["hf_mae"] = None`` and the editable-install finder removed; it checks that ``import hf_mae`` fails.
Inputs go over as a safetensors file, outputs come back the same way. Several calls share one subprocess with
``run_in_fresh_process`` (each start costs a few seconds of importing torch and transformers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHILD = r'''
import json, sys
sys.modules["hf_mae"] = None  # an import of hf_mae now raises ImportError
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
try:
    import hf_mae  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("hf_mae is importable in the child process")
if any(name == "hf_mae" or name.startswith("hf_mae.") for name in sys.modules if sys.modules[name] is not None):
    raise SystemExit("hf_mae was imported in the child process")

import torch, transformers
from safetensors.torch import load_file, save_file

job = json.load(open("job.json"))
tensors = load_file("inputs.safetensors")
report = []
def run_call(i, call):
    auto_class = getattr(transformers, call["auto_class"])
    obj = auto_class.from_pretrained(call.get("folder") or job["folder"], trust_remote_code=True, **call["load_kwargs"])
    inputs = {k: tensors[f"{i}.in.{k}"] for k in call["inputs"]}
    kwargs = {**call["kwargs"], **{k: tensors[f"{i}.kw.{k}"] for k in call["tensor_kwargs"]}}
    outputs = {}
    if isinstance(obj, torch.nn.Module):
        obj.eval()
        with torch.no_grad():
            result = obj(**inputs, **kwargs)
        items = result.items() if hasattr(result, "items") else enumerate(result)
        outputs = {str(k): v for k, v in items if isinstance(v, torch.Tensor)}
    elif inputs:  # a processor: numpy in, tensors out
        result = obj(**{k: v.numpy() for k, v in inputs.items()}, return_tensors="pt", **kwargs)
        outputs = {k: v for k, v in result.items() if isinstance(v, torch.Tensor)}
    save_file({k: v.detach().clone() for k, v in outputs.items()}, f"out{i}.safetensors")
    return {"module": type(obj).__module__, "class_name": type(obj).__name__}

import traceback
for i, call in enumerate(job["calls"]):
    try:
        meta = run_call(i, call)
    except Exception:
        if not job.get("keep_going"):
            raise
        meta = {"error": traceback.format_exc()[-4000:]}
    report.append(meta)
json.dump(report, open("report.json", "w"))
'''


class RemoteOutputs(dict):
    """Output tensors by name (ModelOutput fields, or "0", "1", ... for tuples), plus where the class came from."""

    module: str = ""
    class_name: str = ""
    error: str | None = None  # the child's traceback of a failed call (``keep_going=True`` only)


def _split_tensors(values: dict | None) -> tuple[dict, dict]:
    values = values or {}
    tensors = {k: v for k, v in values.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in values.items() if k not in tensors}
    json.dumps(plain)  # fails early, in the test process, on a value the child cannot receive
    return tensors, plain


def run_in_fresh_process(folder, calls: list[tuple], *, env: dict | None = None, timeout: float = 300,
                         keep_going: bool = False) -> list[RemoteOutputs]:
    """Runs several loads in one fresh process without hf_mae.

    folder: a local folder or a Hub repo id (then pass ``env`` from ``HubServer.client_env``).
    calls: ``(auto_class_name, inputs, call_kwargs)`` or ``(auto_class_name, inputs, call_kwargs, load_kwargs)``;
        ``inputs`` is a dict of tensors passed by name (``None`` to only load, e.g. for AutoConfig); processors
        receive them as numpy arrays. ``call_kwargs`` may hold tensors and JSON values.
    env: the child's environment (default: this one, offline). HF_HOME is always a fresh folder unless env sets it.
    keep_going: a failing call does not stop the others; its RemoteOutputs is empty with ``error`` set to the
        child's traceback (without it any failure raises RuntimeError).
    A call's ``load_kwargs`` may name its own ``folder`` (several folders in one process: see :func:`run_many`).
    Returns one RemoteOutputs per call.
    """
    with tempfile.TemporaryDirectory(prefix="hf-mae-remote-") as tmp:
        tmp = Path(tmp)
        tensors, job_calls = {}, []
        for i, call in enumerate(calls):
            auto_class, inputs, kwargs, load_kwargs = (*call, None, None)[:4]
            inputs = inputs or {}
            tensor_kwargs, plain_kwargs = _split_tensors(kwargs)
            tensors.update({f"{i}.in.{k}": v.detach().cpu().clone() for k, v in inputs.items()})
            tensors.update({f"{i}.kw.{k}": v.detach().cpu().clone() for k, v in tensor_kwargs.items()})
            load_kwargs = dict(load_kwargs or {})
            call_folder = load_kwargs.pop("folder", None)
            job_calls.append({"auto_class": auto_class, "inputs": sorted(inputs), "kwargs": plain_kwargs,
                              "tensor_kwargs": sorted(tensor_kwargs), "load_kwargs": load_kwargs,
                              "folder": None if call_folder is None else str(Path(call_folder).resolve())})
        save_file(tensors, str(tmp / "inputs.safetensors"))
        local = Path(folder)
        folder = str(local.resolve()) if local.exists() else str(folder)
        (tmp / "job.json").write_text(json.dumps({"folder": folder, "calls": job_calls, "keep_going": keep_going}))
        child_env = dict(os.environ, HF_HUB_OFFLINE="1") if env is None else dict(env)
        child_env.pop("PYTHONPATH", None)
        child_env.setdefault("HF_HOME", str(tmp / "hf_home"))
        child_env.pop("HF_MODULES_CACHE", None)  # remote code lands in the fresh HF_HOME/modules
        proc = subprocess.run([sys.executable, "-I", "-c", CHILD], cwd=tmp, env=child_env, capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = proc.stderr[-4000:]
            raise RuntimeError(f"fresh-process load of {folder} failed (exit {proc.returncode}):\n{tail}")
        results = []
        for i, meta in enumerate(json.loads((tmp / "report.json").read_text())):
            if "error" in meta:
                out = RemoteOutputs()
                out.error = meta["error"]
            else:
                out = RemoteOutputs(load_file(str(tmp / f"out{i}.safetensors")))
                out.module, out.class_name = meta["module"], meta["class_name"]
            results.append(out)
        return results


def load_in_fresh_process(folder, auto_class_name: str, inputs: dict | None, call_kwargs: dict | None = None,
                          **options) -> RemoteOutputs:
    """Loads ``folder`` with ``transformers.<auto_class_name>.from_pretrained(folder, trust_remote_code=True)`` in a
    fresh process without hf_mae, calls it on ``inputs`` and ``call_kwargs``, and returns its output tensors.
    ``options``: ``env``, ``timeout`` as in :func:`run_in_fresh_process`."""
    return run_in_fresh_process(folder, [(auto_class_name, inputs, call_kwargs)], **options)[0]


def run_many(jobs: list[tuple], **options) -> list[RemoteOutputs]:
    """Runs ``(folder, auto_class_name, inputs, call_kwargs)`` jobs, each on its own folder, in ONE fresh process
    (a start costs seconds of importing torch and transformers; a suite of 45 presets pays it once). A failing job
    does not stop the others: its result has ``error`` set. ``options``: ``env``, ``timeout``."""
    calls = [(auto_class, inputs, kwargs, {"folder": folder}) for folder, auto_class, inputs, kwargs in jobs]
    return run_in_fresh_process(jobs[0][0], calls, keep_going=True, **options)
