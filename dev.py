#!/usr/bin/env python3
"""Set up hf-mae in ./.venv and run something in it. Needs only Python 3.10+.

    python3 dev.py main    # set up, then the main job: pretrain mae-tiny on digits, probe, figure
    python3 dev.py test    # set up, then the whole test suite
    python3 dev.py setup   # set up only

The venv is isolated (no system site-packages), so the tests see only what the project installs: a package
installed by hand elsewhere cannot make a test pass here and fail on a fresh machine. torch is pinned to
``torch==2.13.0``, which on hf-mae's build machines is a CPU wheel on local disk (another release would download
a multi-GB CUDA build).
"""

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
TORCH = "torch==2.13.0"


def sh(*cmd, check=True):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, check=check).returncode


def imports(module: str) -> bool:
    return subprocess.run([str(PYTHON), "-c", f"import {module}"], capture_output=True).returncode == 0


def setup() -> None:
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True, system_site_packages=False).create(VENV)
    if not imports("torch"):
        sh(PYTHON, "-m", "pip", "install", "-q", TORCH)
    if not imports("hf_mae") or not imports("xdist") or os.environ.get("HF_MAE_REINSTALL"):  # xdist: the test extra
        sh(PYTHON, "-m", "pip", "install", "-q", "-e", f"{ROOT}[test]")


def main() -> int:
    task = sys.argv[1] if len(sys.argv) > 1 else "main"
    setup()
    if task == "setup":
        return 0
    if task == "test":
        # one worker per core; a test file stays on one worker (its module fixtures are built once)
        code = sh(PYTHON, "-m", "pytest", "-q", "-n", "auto", "--dist", "loadfile", *sys.argv[2:], check=False)
        if code == 5:
            print("error: pytest collected no tests", file=sys.stderr)
            return 1
        return code
    if task == "main":
        return sh(PYTHON, "-m", "hf_mae.cli", "demo", *sys.argv[2:], check=False)
    print(f"unknown task {task!r}; use main, test or setup", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
