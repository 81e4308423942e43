"""read_adapter tells the formats apart by what the path is, and anything else is one clear AdapterError."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_runtime.adapters import read_adapter, write_onnx_adapter
from llm_runtime.errors import AdapterError

FIXTURE = Path(__file__).parent / "fixtures" / "lora-llama"


def test_each_format_by_its_path(tmp_path):
    cfg = base_config_of(FIXTURE)
    peft = read_adapter(FIXTURE)
    assert peft.name == "lora-llama" and len(peft.pairs) == 14
    gguf = read_adapter(FIXTURE / "adapter-f32.gguf", config=cfg)
    assert gguf.name == "adapter-f32"
    (tmp_path / "no-suffix").write_bytes((FIXTURE / "adapter-f32.gguf").read_bytes())  # told by its magic
    assert read_adapter(tmp_path / "no-suffix", "x", cfg).pairs.keys() == peft.pairs.keys()
    path = write_onnx_adapter(peft, tmp_path / "mine.onnx_adapter")
    onnx = read_adapter(path, "named")
    assert onnx.name == "named"
    for m, pair in peft.pairs.items():
        np.testing.assert_array_equal(onnx.pairs[m].b, pair.b)
        np.testing.assert_array_equal(gguf.pairs[m].b, pair.b)


def base_config_of(folder: Path):
    import json

    from llm_runtime.model_builder.config import model_config

    return model_config(json.loads((folder / "base_config.json").read_text()))


def test_what_is_not_an_adapter(tmp_path):
    with pytest.raises(AdapterError, match="no such adapter file or folder"):
        read_adapter(tmp_path / "missing")
    with pytest.raises(AdapterError, match="a folder without adapter_config.json; an adapter is a folder with"):
        read_adapter(tmp_path)
    (tmp_path / "weights.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(AdapterError, match="not an adapter we read"):
        read_adapter(tmp_path / "weights.safetensors")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(AdapterError, match="not a readable GGUF file: .*broken.gguf"):
        read_adapter(tmp_path / "broken.gguf")
