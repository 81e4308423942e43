"""Turns what a user names ("default", a built folder, a Hugging Face folder, a .gguf, a Hub name) into a built
folder."""
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

from . import build_cache
from .build_cache import CacheEntry
from .default import RECOMMENDED_SAMPLING, default_gguf, home
from .hub_name import HubName, parse

log = logging.getLogger(__name__)


# GroupQueryAttention's query_seqlens input (what lets one call hold right-padded and idle rows)
ORT_HAS_QUERY_SEQLENS = Version(ort.__version__).release >= (1, 32)


def build_options_for(provider_build: str, lora_targets: tuple[str, ...] = ()) -> BuildOptions:
    """int4 everywhere (the precision that runs fastest on CPU and fits GPUs best), with the batching input
    when this onnxruntime knows it (1.32 and newer); LoRA inputs on `lora_targets` (a folder of its own)."""
    return BuildOptions(precision=Precision.INT4, target=BuildTarget(provider_build),
                        query_seqlens=ORT_HAS_QUERY_SEQLENS, lora_targets=lora_targets)


def resolve_model(model: str | Path, provider_build: str = "cpu", progress: bool = True,
                  opts: BuildOptions | None = None) -> Path:
    """A built model folder for `model`, building it into the cache on first use (`opts`: the recipe, else
    `build_options_for(provider_build)`). A path that exists wins over a Hub name spelled the same."""
    opts = opts or build_options_for(provider_build)
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
        name = parse(str(model))
        if name is None:
            raise SourceError(f"model not found: {path} (a built folder, a Hugging Face folder, a .gguf file, a "
                              "Hub name such as Qwen/Qwen2.5-0.5B-Instruct, or 'default')")
        return Path(resolve_hub(name, opts, progress).folder)
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = home() / "models" / f"{path.stem}-{key}-{opts.tag}"
    if not is_built(folder):
        log.info("building %s into %s", path, folder)
        _build(path, folder, opts, progress)
    return folder


def resolve_hub(name: HubName, opts: BuildOptions, progress: bool = True) -> CacheEntry:
    """The cached build of `name` at the commit its revision resolves to now, with `opts`' recipe: downloaded
    and built on first use, once however many processes ask at the same time (a repository of ONNX builds is
    downloaded, not built)."""
    from . import hub  # huggingface_hub, imported only when a Hub name is resolved

    model = hub.locate(name)
    recipe = "onnx" if model.kind == "onnx" else opts.tag
    key = build_cache.entry_key(name.repo, model.commit, model.variant, recipe)
    if entry := build_cache.find(key):
        return entry
    with build_cache.lock(key):
        if entry := build_cache.find(key):  # built by another process while this one waited
            return entry
        source = hub.download(model, progress)
        folder = source if model.kind == "onnx" else build_cache.build_folder(key)
        if model.kind != "onnx":
            log.info("building %s (%s) into %s", name, model.commit[:12], folder)
            _build(source, folder, opts, progress)
        entry = CacheEntry(str(name), name.repo, name.revision or "main", model.commit, model.variant, recipe,
                           str(folder), str(source))
        build_cache.record(entry)
        return entry


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
    """The name a model is served and reported under: "default", a Hub name, or the folder's (a .gguf file's)
    name without its path, never a filesystem path."""
    if str(model) == "default":
        return "default"
    path = Path(model)
    if not path.exists() and (name := parse(str(model))):
        return str(name)
    return path.stem if path.suffix == ".gguf" else path.resolve().name
