"""Hugging Face folders: config.json, safetensors shards (fp32/fp16/bf16), tokenizer files.

Tensors are read one at a time from memory-mapped shards (bf16 widened in numpy, no torch).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .source import SourceError, TokenizerFiles, ensure_file

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(ensure_file(path, what).read_text())
    except json.JSONDecodeError as e:
        raise SourceError(f"{what} is not valid JSON: {path} ({e})") from None


class _Shard:
    """One memory-mapped safetensors file: an 8-byte header length, a JSON header, then raw data."""

    def __init__(self, path: Path):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SourceError(f"truncated or corrupt safetensors file: {path}")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise SourceError(f"corrupt safetensors header in {path}")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise SourceError(f"corrupt safetensors header in {path}") from None
        if not isinstance(header, dict):
            raise SourceError(f"corrupt safetensors header in {path}")
        header.pop("__metadata__", None)
        for name, meta in header.items():
            offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
            if (not isinstance(offsets, list) or len(offsets) != 2 or not isinstance(meta.get("shape"), list)
                    or "dtype" not in meta):
                raise SourceError(f"corrupt safetensors header in {path} (tensor {name!r})")
        self.path, self.start, self.header = path, 8 + n, header
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        if self.start + end > size:
            raise SourceError(f"truncated safetensors file: {path} ({size} bytes, header needs {self.start + end})")
        self.data = np.memmap(path, dtype=np.uint8, mode="r")

    def get(self, name: str) -> np.ndarray:
        meta = self.header[name]
        dtype = _DTYPES.get(meta["dtype"])
        if dtype is None:
            raise SourceError(f"tensor {name!r} in {self.path.name} has unsupported dtype {meta['dtype']}")
        a, b = meta["data_offsets"]
        if b - a != int(np.prod(meta["shape"])) * np.dtype(dtype).itemsize:
            raise SourceError(f"tensor {name!r} in {self.path} has shape {meta['shape']} but {b - a} bytes")
        raw = self.data[self.start + a:self.start + b].view(dtype).reshape(meta["shape"])
        if meta["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)


class HFSource:
    """A WeightSource over a Hugging Face model folder."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        if not folder.is_dir():
            raise SourceError(f"model folder not found: {folder}")
        self.folder = folder
        self.config = _read_json(folder / "config.json", "config.json")
        gen = folder / "generation_config.json"
        self.generation_config = _read_json(gen, "generation_config.json") if gen.exists() else {}
        self.description = f"hf:{folder.resolve()}"
        self._where: dict[str, _Shard] = {}
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise SourceError(f"no .safetensors files in {folder}")
        index = folder / "model.safetensors.index.json"
        if index.exists():
            wanted = set(_read_json(index, "model.safetensors.index.json").get("weight_map", {}).values())
            missing = [w for w in wanted if not (folder / w).exists()]
            if missing:
                raise SourceError(f"safetensors shard(s) listed in the index are missing: {', '.join(sorted(missing))}")
        for path in files:
            shard = _Shard(path)
            for name in shard.header:
                self._where[name] = shard

    def names(self) -> list[str]:
        return list(self._where)

    def get(self, name: str) -> np.ndarray:
        return self._where[name].get(name)

    def get_blocks(self, name: str):
        return None

    def tensor_format(self, name: str) -> str:
        return str(self._where[name].header[name]["dtype"])

    def tokenizer_files(self) -> TokenizerFiles:
        out = TokenizerFiles()
        for name in TOKENIZER_FILES:
            path = self.folder / name
            if path.exists():
                out.files[name] = _read_json(path, name)
        if "tokenizer.json" not in out.files:
            raise SourceError(f"tokenizer.json not found in {self.folder} (a fast tokenizer is required)")
        template = self.folder / "chat_template.jinja"
        if template.exists():
            out.chat_template = template.read_text()
        else:
            tpl = out.files.get("tokenizer_config.json", {}).get("chat_template")
            if isinstance(tpl, list):  # named templates: take the default one
                tpl = next((t["template"] for t in tpl if t.get("name") == "default"), None)
            out.chat_template = tpl
        return out
