"""`llm-runtime build` on bad input: exit code 2, one line starting with "error:", no traceback, nothing left."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_runtime.cli.main import main
from llm_runtime.model_builder.decoder import DecoderEmitter

CASE = "llama-gqa2"
CLI = Path(sys.executable).parent / "llm-runtime"


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory) -> Path:
    import gguf
    from test_gguf_source import gpt2_metadata, tiny_llama, write_llama
    from tiny_models import tiny_tokenizer

    bpe = tiny_tokenizer(300)
    cfg, weights = tiny_llama(bpe.get_vocab_size(), True)
    path = tmp_path_factory.mktemp("good-gguf") / "tiny.gguf"
    write_llama(path, cfg, weights, gguf.GGMLQuantizationType.Q8_0, tokenizer=lambda w: gpt2_metadata(w, bpe))
    return path


def hf_copy(tiny_hf, tmp_path: Path) -> Path:
    folder = tmp_path / "source"
    shutil.copytree(tiny_hf(CASE), folder)
    return folder


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def leftovers(out: Path) -> list[str]:
    """The output folder or a temporary build folder next to it."""
    return sorted(p.name for p in out.parent.iterdir() if p.name == out.name or p.name.startswith(f".{out.name}."))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`llm-runtime ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop what fixtures printed (transformers' save_pretrained progress)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fails_cleanly(capsys, argv: list[str], out: Path) -> str:
    code, _, err = cli(capsys, "build", *argv, "-o", str(out))
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert leftovers(out) == []
    return lines[0]


# -- bad sources ----------------------------------------------------------------------------------------------
def test_missing_path(capsys, tmp_path):
    line = fails_cleanly(capsys, [str(tmp_path / "nowhere")], tmp_path / "out")
    assert "not found" in line and "nowhere" in line


def test_missing_gguf_file(capsys, tmp_path):
    line = fails_cleanly(capsys, [str(tmp_path / "nowhere.gguf")], tmp_path / "out")
    assert "not found" in line


def test_folder_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    line = fails_cleanly(capsys, [str(tmp_path / "empty")], tmp_path / "out")
    assert "config.json not found" in line


def test_config_not_json(capsys, tiny_hf, tmp_path):
    folder = hf_copy(tiny_hf, tmp_path)
    (folder / "config.json").write_text('{"model_type": "llama",')
    assert "config.json is not valid JSON" in fails_cleanly(capsys, [str(folder)], tmp_path / "out")


def test_config_missing_field(capsys, tiny_hf, tmp_path):
    folder = hf_copy(tiny_hf, tmp_path)
    edit_config(folder, lambda c: c.pop("hidden_size"))
    assert "'hidden_size'" in fails_cleanly(capsys, [str(folder)], tmp_path / "out")


def test_unsupported_model_type_lists_the_supported(capsys, tiny_hf, tmp_path):
    folder = hf_copy(tiny_hf, tmp_path)
    edit_config(folder, lambda c: c.update(model_type="gpt2"))
    line = fails_cleanly(capsys, [str(folder)], tmp_path / "out")
    assert "'gpt2'" in line and re.search(r"supported: .*llama", line)


def test_truncated_safetensors(capsys, tiny_hf, tmp_path):
    folder = hf_copy(tiny_hf, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    line = fails_cleanly(capsys, [str(folder)], tmp_path / "out")
    assert "truncated" in line and "model.safetensors" in line


def test_corrupt_safetensors_header(capsys, tiny_hf, tmp_path):
    folder = hf_copy(tiny_hf, tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8:8 + n] = b"{" + b"\xff" * (n - 1)  # same length, not JSON
    (folder / "model.safetensors").write_bytes(bytes(data))
    assert "corrupt safetensors header" in fails_cleanly(capsys, [str(folder)], tmp_path / "out")
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + bytes(data[8:]))  # absurd length
    assert "corrupt safetensors header" in fails_cleanly(capsys, [str(folder)], tmp_path / "out")


def write_header(path: Path, header) -> None:
    """Replace a safetensors file's JSON header, keeping its data."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])


@pytest.mark.parametrize("header", [[1, 2], {"model.norm.weight": {"dtype": "F32", "shape": [64]}}],
                         ids=["not-an-object", "no-data-offsets"])
def test_malformed_safetensors_header(capsys, tiny_hf, tmp_path, header):
    folder = hf_copy(tiny_hf, tmp_path)
    write_header(folder / "model.safetensors", header)
    assert "safetensors" in fails_cleanly(capsys, [str(folder)], tmp_path / "out")


@pytest.mark.parametrize("cut", [0.5, 0.02], ids=["half", "in-header"])
def test_truncated_gguf(capsys, good_gguf, tmp_path, cut):
    data = good_gguf.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: int(len(data) * cut)])
    line = fails_cleanly(capsys, [str(tmp_path / "cut.gguf")], tmp_path / "out")
    assert "cut.gguf" in line


def test_random_bytes_gguf(capsys, tmp_path):
    (tmp_path / "random.gguf").write_bytes(np.random.default_rng(0).bytes(4096))
    assert "random.gguf" in fails_cleanly(capsys, [str(tmp_path / "random.gguf")], tmp_path / "out")


def test_unsupported_precision_provider_pair(capsys, tiny_hf, tmp_path):
    line = fails_cleanly(capsys, [str(tiny_hf(CASE)), "--precision", "fp16", "--provider", "cpu"], tmp_path / "out")
    assert "fp16" in line and "cpu" in line and "supported:" in line


# -- the output folder ----------------------------------------------------------------------------------------
def test_existing_output_is_left_untouched(capsys, tiny_hf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "build", str(tiny_hf(CASE)), "-o", str(out))
    assert code == 2 and err.startswith("error: ") and "--force" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_overwrites(capsys, tiny_hf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, printed, _ = cli(capsys, "build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "int8", "--force")
    assert code == 0 and printed.startswith(f"built {out}")
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "llm_runtime.json").read_text())["precision"] == "int8"
    assert main(["build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "fp32", "--force"]) == 0
    assert json.loads((out / "llm_runtime.json").read_text())["precision"] == "fp32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_onto_a_file(capsys, tiny_hf, tmp_path):
    (tmp_path / "out").write_text("a file")
    code, _, err = cli(capsys, "build", str(tiny_hf(CASE)), "-o", str(tmp_path / "out"), "--force")
    assert code in (0, 2) and "Traceback" not in err  # replaced, or refused with one line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_failed_force_build_keeps_the_old_folder(capsys, tiny_hf, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli(capsys, "build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "int8")[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(DecoderEmitter, "mlp", lambda self, i, x: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        main(["build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "fp32", "--force"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert leftovers(out) == ["out"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_build_interrupted_midway_leaves_nothing(capsys, tiny_hf, tmp_path, monkeypatch, error):
    real_mlp, reached = DecoderEmitter.mlp, []

    def mlp(self, i, x):
        reached.append(i)
        if i == 1:
            raise error("stopped at layer 1")
        return real_mlp(self, i, x)

    monkeypatch.setattr(DecoderEmitter, "mlp", mlp)
    out = tmp_path / "out"
    if error is KeyboardInterrupt:
        code, _, err = cli(capsys, "build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "fp32")
        assert code == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
    else:
        with pytest.raises(RuntimeError, match="layer 1"):
            main(["build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "fp32"])
    assert reached == [0, 1]
    assert leftovers(out) == [] and list(tmp_path.iterdir()) == []


def test_build_into_a_new_nested_folder(capsys, tiny_hf, tmp_path):
    out = tmp_path / "a" / "b" / "model"
    assert main(["build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "fp32"]) == 0
    assert (out / "model.onnx").is_file() and leftovers(out) == ["model"]


# -- a real process and --verify ------------------------------------------------------------------------------
def test_subprocess_prints_one_error_line(good_gguf, tmp_path):
    data = good_gguf.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = subprocess.run([str(CLI), "build", str(tmp_path / "cut.gguf"), "-o", str(out)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cut.gguf" in lines[0], proc.stderr
    assert leftovers(out) == []


def test_verify_reports_a_small_difference(capsys, tiny_hf, tmp_path):
    out = tmp_path / "out"
    code, printed, _ = cli(capsys, "build", str(tiny_hf(CASE)), "-o", str(out), "--precision", "fp32", "--verify")
    assert code == 0
    m = re.search(r"largest logit difference against transformers: (\S+)", printed)
    assert m, printed
    assert float(m.group(1)) < 1e-4
