"""`llm-runtime adapter convert`: a GGUF LoRA to our folder and to an .onnx_adapter, both reading back as the PEFT
folder it came from; a misfit or a missing base is one `error:` line and exit code 2."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from llm_runtime.adapters import read_adapter
from llm_runtime.cli.main import main

FIXTURE = Path(__file__).parent / "fixtures" / "lora-llama"


def base_folder(tmp_path: Path) -> Path:
    (tmp_path / "base").mkdir()
    shutil.copy(FIXTURE / "base_config.json", tmp_path / "base" / "config.json")
    return tmp_path / "base"


def test_converts_both_ways(tmp_path, capsys):
    base = base_folder(tmp_path)
    gguf = FIXTURE / "adapter-f32.gguf"
    assert main(["adapter", "convert", str(gguf), str(tmp_path / "ours"), "--to", "folder", "--base", str(base),
                 "--name", "mine"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["adapter", "convert", str(tmp_path / "ours"), str(tmp_path / "a.onnx_adapter"), "--to",
                 "onnx_adapter", "--naming", "genai"]) == 0
    want = read_adapter(FIXTURE)
    for got in (read_adapter(tmp_path / "ours"), read_adapter(tmp_path / "a.onnx_adapter")):
        for m, pair in want.pairs.items():
            np.testing.assert_array_equal(got.pairs[m].b, pair.b)
    assert read_adapter(tmp_path / "ours").name == "mine"


def test_errors_are_one_line(tmp_path, capsys):
    gguf = FIXTURE / "adapter-f32.gguf"
    assert main(["adapter", "convert", str(gguf), str(tmp_path / "x"), "--to", "folder"]) == 2
    assert "error: " in capsys.readouterr().err  # a llama GGUF LoRA needs --base
    base = base_folder(tmp_path)
    (base / "config.json").write_text((base / "config.json").read_text().replace('"intermediate_size": 128',
                                                                                 '"intermediate_size": 96'))
    assert main(["adapter", "convert", str(gguf), str(tmp_path / "x"), "--to", "folder", "--base", str(base)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "the base linear has in" in err and not (tmp_path / "x").exists()
