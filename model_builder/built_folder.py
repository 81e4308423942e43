"""A built folder's file names, and whether a folder holds a finished build.

Kept apart from build.py so that the runtime can find and check a built folder without importing the builder
(onnx alone takes most of a second to import)."""
from __future__ import annotations

from pathlib import Path

MANIFEST = "llm_runtime.json"
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"
LORA_MODEL_FILE = "model.lora.onnx"  # a LoRA build's graph with LoRA inputs, on the same data file


def is_built(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file() and (Path(folder) / MODEL_FILE).is_file()
