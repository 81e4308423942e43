"""`read_adapter`: any adapter file or folder we read, told apart by what the path is."""
from __future__ import annotations

from pathlib import Path

from ..errors import AdapterError
from ..model_builder.config import ModelConfig
from .folder import read_folder
from .genai_adapter import read_onnx_adapter
from .gguf_lora import read_gguf_lora
from .lora import LoraAdapter
from .peft_folder import CONFIG

GGUF_MAGIC = b"GGUF"
KINDS = f"a folder with {CONFIG} (PEFT or ours), a GGUF LoRA (.gguf) or an .onnx_adapter file"


def read_adapter(path: Path | str, name: str | None = None, config: ModelConfig | None = None) -> LoraAdapter:
    """Read the adapter at `path` (a PEFT folder or ours, a llama.cpp GGUF LoRA, an onnxruntime-genai
    .onnx_adapter); `name` defaults to the file or folder's name. `config` is the base's, needed to split fused
    modules and to undo llama.cpp's q/k row order. Anything else is one AdapterError."""
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise AdapterError(f"{path}: a folder without {CONFIG}; an adapter is {KINDS}")
        return read_folder(path, name, config)
    if not path.is_file():
        raise AdapterError(f"{path}: no such adapter file or folder")
    stem = name or path.name.removesuffix(path.suffix)
    if path.suffix == ".onnx_adapter":
        return read_onnx_adapter(path, stem, config)
    with open(path, "rb") as f:
        magic = f.read(4)
    if path.suffix == ".gguf" or magic == GGUF_MAGIC:
        return read_gguf_lora(path, stem, config)
    raise AdapterError(f"{path}: not an adapter we read; an adapter is {KINDS}")
