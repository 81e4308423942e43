"""A built folder's file names, whether a folder holds a finished build, and where the default model's goes.

Kept apart from build.py so that the runtime can find and check a built folder without importing the builder
(onnx alone takes most of a second to import)."""
from __future__ import annotations

from pathlib import Path

from .default_model import home
from .precision import BuildOptions

MANIFEST = "llm_runtime.json"
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"


def default_build_dir(opts: BuildOptions) -> Path:
    return home() / "models" / f"smollm2-135m-instruct-{opts.tag}"


def is_built(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file() and (Path(folder) / MODEL_FILE).is_file()
