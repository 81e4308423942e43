"""A model's name on the Hugging Face Hub: `org/name`, `@revision`, `:QUANT` (one GGUF file by its quantization,
as llama.cpp's `-hf` and Ollama take it) or a path inside the repository (`org/name/file.gguf`, a subfolder).

    Qwen/Qwen2.5-0.5B-Instruct                  the safetensors repository, built on first use
    Qwen/Qwen2.5-0.5B-Instruct@v1.0             at a branch, tag or commit
    bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M the GGUF file whose quantization is Q4_K_M (any case)
    org/repo/model-q8_0.gguf                    that file; hf.co/ (Ollama's prefix) may start any of these
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(rf"^(?:(?:https://)?(?:hf\.co|huggingface\.co)/)?(?P<repo>{_PART}/{_PART})"
                   rf"(?P<path>(?:/[^@:/]+)*)(?:@(?P<revision>[^:@\s]+))?(?::(?P<quant>[A-Za-z0-9_.-]+))?$")
_SPLIT = re.compile(r"-\d{5}-of-\d{5}$")  # a GGUF split into parts: model-Q4_K_M-00001-of-00002.gguf


@dataclass(frozen=True)
class HubName:
    repo: str  # "org/name"
    revision: str | None = None  # a branch, tag or commit; None: the default branch
    quant: str | None = None  # a GGUF quantization label, as written
    path: str | None = None  # a file (.gguf) or a subfolder inside the repository

    def __str__(self) -> str:
        """The canonical name: the served name and the one `llm-runtime list` shows."""
        return (self.repo + (f"/{self.path}" if self.path else "") + (f"@{self.revision}" if self.revision else "")
                + (f":{self.quant}" if self.quant else ""))

    @property
    def gguf_file(self) -> str | None:
        return self.path if self.path and self.path.lower().endswith(".gguf") else None


def parse(name: str) -> HubName | None:
    """The Hub name that `name` spells, or None when it spells none (a path, "default")."""
    m = _NAME.match(str(name))
    if m is None or str(name).startswith(("./", "../")):
        return None
    if m["path"] and m["quant"]:
        raise ValueError(f"{name}: give a file or a :QUANT, not both")
    return HubName(m["repo"], m["revision"], m["quant"], m["path"].strip("/") or None)


def quant_of(filename: str) -> str | None:
    """The quantization label a GGUF file's name ends with ("Model-Q4_K_M.gguf", "model.q8_0.gguf" -> Q4_K_M,
    Q8_0), upper-cased; None for a file that is not a model's GGUF (mmproj-*, not .gguf)."""
    base = filename.rsplit("/", 1)[-1]
    if not base.lower().endswith(".gguf") or base.lower().startswith("mmproj"):
        return None
    stem = _SPLIT.sub("", base[:-5])
    return re.split(r"[.-]", stem)[-1].upper()


def is_split(filename: str) -> bool:
    return bool(_SPLIT.search(filename.rsplit("/", 1)[-1][:-5]))
