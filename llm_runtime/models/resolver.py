"""Turns what a user names ("default", a built folder, a Hugging Face folder, a .gguf) into a built folder."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import onnxruntime as ort
from packaging.version import Version

from llm_runtime.model_builder.built_folder import is_built
from llm_runtime.model_builder.precision import BuildOptions, BuildTarget, Precision
from llm_runtime.model_builder.recommended_sampling import record_sampling
from llm_runtime.model_builder.source import SourceError

from .default import RECOMMENDED_SAMPLING, default_gguf, home

log = logging.getLogger(__name__)


# GroupQueryAttention's query_seqlens input (what lets one call hold right-padded and idle rows)
ORT_HAS_QUERY_SEQLENS = Version(ort.__version__).release >= (1, 32)


def build_options_for(provider_build: str) -> BuildOptions:
    """int4 everywhere (the precision that runs fastest on CPU and fits GPUs best), with the batching input
    when this onnxruntime knows it (1.32 and newer)."""
    return BuildOptions(precision=Precision.INT4, target=BuildTarget(provider_build),
                        query_seqlens=ORT_HAS_QUERY_SEQLENS)


def resolve_model(model: str | Path, provider_build: str = "cpu", progress: bool = True) -> Path:
    """A built model folder for `model`, building it into the cache on first use."""
    opts = build_options_for(provider_build)
    if str(model) == "default":
        folder = home() / "models" / f"smollm2-135m-instruct-{opts.tag}"
        if not is_built(folder):
            log.info("building the default model into %s", folder)
            _build(default_gguf(progress), folder, opts, progress)
        _record_default_sampling(folder)
        return folder
    path = Path(model)
    if (path / "genai_config.json").is_file():
        return path
    if not path.exists():
        raise SourceError(f"model not found: {path} (a built folder, a Hugging Face folder, a .gguf file or 'default')")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = home() / "models" / f"{path.stem}-{key}-{opts.tag}"
    if not is_built(folder):
        log.info("building %s into %s", path, folder)
        _build(path, folder, opts, progress)
    return folder


def _record_default_sampling(folder: Path) -> None:
    """The default model's recommended sampling in its folder (once: a folder built before has it added)."""
    try:
        if record_sampling(folder, RECOMMENDED_SAMPLING):
            log.info("recorded the default model's recommended sampling %s in %s", RECOMMENDED_SAMPLING, folder)
    except OSError as e:  # a read-only cache: the folder serves on without it
        log.warning("could not record the default model's recommended sampling in %s: %s", folder, e)


def _build(source: Path, folder: Path, opts: BuildOptions, progress: bool) -> None:
    """The builder, imported only when a model is built: onnx, which it needs, takes most of a second to import."""
    from llm_runtime.model_builder.build import build

    build(source, folder, opts, force=True, progress=progress)


def model_name(model: str | Path) -> str:
    """The name a model is served and reported under: "default", or the folder's (a .gguf file's) name without
    its path, never a filesystem path."""
    if str(model) == "default":
        return "default"
    path = Path(model)
    return path.stem if path.suffix == ".gguf" else path.resolve().name
