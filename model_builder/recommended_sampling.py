"""A model's recommended sampling: the fields of its `generation_config.json` that a server reads as the
defaults of a request (vLLM's `--generation-config auto`), and how a built folder records them.

A built folder keeps them in its `generation_config.json` (Hugging Face's file, copied from the source, plus
what a GGUF's `general.sampling.*` metadata says) and in `genai_config.json`'s `search` section, so
onnxruntime-genai samples with them too. Kept apart from build.py: the runtime reads them without the builder.
"""
from __future__ import annotations

import json
import numbers
import os
from pathlib import Path

GENERATION_CONFIG, GENAI_CONFIG = "generation_config.json", "genai_config.json"
# the fields read, with transformers' GenerationConfig defaults: as vLLM does (its diff against transformers'
# defaults), a field equal to its default recommends nothing
FIELDS = {"temperature": 1.0, "top_p": 1.0, "top_k": 50, "min_p": None, "repetition_penalty": 1.0, "typical_p": 1.0}
GENAI_TOP_K = 50  # genai's top_k when a model recommends sampling but no top_k: transformers' default
# GGUF metadata (llama.cpp's general.sampling.*) -> generation_config.json's names
GGUF_KEYS = {"general.sampling.temp": "temperature", "general.sampling.top_p": "top_p",
             "general.sampling.top_k": "top_k", "general.sampling.min_p": "min_p",
             "general.sampling.penalty_repeat": "repetition_penalty"}


def recommended_sampling(generation_config: dict) -> dict:
    """The recommended sampling fields of a generation_config.json dict (numbers that differ from
    transformers' defaults), in FIELDS' order."""
    out = {}
    for name, default in FIELDS.items():
        value = generation_config.get(name)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and value != default:
            out[name] = int(value) if name == "top_k" else float(value)
    return out


def folder_sampling(folder: str | Path) -> dict:
    """A built folder's recommended sampling ({} when its generation_config.json has none)."""
    path = Path(folder) / GENERATION_CONFIG
    try:
        gen = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return recommended_sampling(gen) if isinstance(gen, dict) else {}


def genai_search(search: dict, sampling: dict) -> dict:
    """genai_config.json's `search` section with `sampling` in it: onnxruntime-genai knows temperature, top_k,
    top_p and repetition_penalty, and samples only with do_sample (greedy otherwise)."""
    out = dict(search)
    out.update({k: sampling[k] for k in ("temperature", "top_p", "repetition_penalty") if k in sampling})
    if sampling.get("temperature", 1.0) > 0 and ({"temperature", "top_p", "top_k"} & set(sampling)):
        out.update(do_sample=True, top_k=sampling.get("top_k", GENAI_TOP_K))
    elif "temperature" in sampling:  # temperature 0: greedy
        out.update(do_sample=False, top_k=1)
    return out


def record_sampling(folder: str | Path, sampling: dict) -> bool:
    """Record `sampling` as a built folder's recommended settings (generation_config.json and genai's search
    section), unless it already holds them; True when the files were written."""
    folder, sampling = Path(folder), recommended_sampling(sampling)
    gen = _read(folder / GENERATION_CONFIG)
    if recommended_sampling(gen) == sampling:
        return False
    genai = _read(folder / GENAI_CONFIG)
    gen = {k: v for k, v in gen.items() if k not in FIELDS} | sampling
    _write(folder / GENERATION_CONFIG, gen)
    if genai:
        _write(folder / GENAI_CONFIG, {**genai, "search": genai_search(genai.get("search", {}), sampling)})
    return True


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(path: Path, obj: dict) -> None:
    """Whole or not at all: a reader never sees half a file."""
    part = path.with_name(f".{path.name}.{os.getpid()}")
    part.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    part.replace(path)
