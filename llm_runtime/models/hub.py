"""A Hub name -> its resolved commit, what kind of model the repository holds, and the files a build needs,
downloaded through huggingface_hub (its cache, HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE, revisions, progress bars).

Offline (HF_HUB_OFFLINE=1, or the Hub out of reach) a name resolves from huggingface_hub's cache: the revision's
snapshot folder, whose files stand for the repository's listing.
"""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import httpx2
import huggingface_hub as hf
from huggingface_hub import errors
from tqdm.auto import tqdm

from llm_runtime.model_builder.source import SourceError

from .hub_name import HubName, is_split, quant_of

log = logging.getLogger(__name__)
DEFAULT_QUANT = "Q4_K_M"  # llama.cpp's and Ollama's choice when a GGUF repository is named without one
CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json")
NOT_ONNX = (".md", ".gitattributes", ".png", ".jpg", ".gguf", ".bin", ".pt", ".pth", ".safetensors", ".msgpack", ".h5")


@dataclass(frozen=True)
class HubModel:
    """What a name resolved to: `kind` "onnx" (a built folder, loaded as it is), "gguf" (one file) or
    "safetensors" (a Hugging Face folder); `files`: the repository paths to download (safetensors with an index:
    the small files, and the shards the index names follow)."""

    name: HubName
    commit: str
    kind: str
    files: tuple[str, ...]

    @property
    def variant(self) -> str:
        """What tells two builds of one commit apart beside the recipe: the GGUF file or the subfolder."""
        if self.kind == "gguf":
            return Path(self.files[0]).stem
        return self.name.path or ""


def locate(name: HubName) -> HubModel:
    """The commit `name`'s revision resolves to and the files to fetch (the Hub's listing; offline, the cache's)."""
    with hub_errors(name):
        try:
            info = hf.HfApi().model_info(name.repo, revision=name.revision)
            commit, files = info.sha, [s.rfilename for s in info.siblings or []]
        except (errors.OfflineModeIsEnabled, httpx2.TransportError) as e:
            log.info("the Hub is out of reach (%s): resolving %s from the cache", e, name)
            folder = Path(hf.snapshot_download(name.repo, revision=name.revision, allow_patterns=[],
                                               local_files_only=True))
            commit = folder.name
            files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    kind, chosen = choose(name, files)
    return HubModel(name, commit, kind, chosen)


def choose(name: HubName, files: list[str]) -> tuple[str, tuple[str, ...]]:
    """(kind, files to fetch) for a repository holding `files`; SourceError when the name picks nothing."""
    ggufs = sorted(f for f in files if quant_of(f))
    if name.gguf_file:
        if name.gguf_file not in files:
            raise SourceError(f"{name}: no file {name.gguf_file} in {name.repo}{_available(ggufs)}")
        return "gguf", (name.gguf_file,)
    if name.quant:
        return "gguf", (_gguf_for(name, name.quant, ggufs),)
    prefix = f"{name.path}/" if name.path else ""
    here = [f[len(prefix):] for f in files if f.startswith(prefix) and "/" not in f[len(prefix):]]
    if "genai_config.json" in here:
        return "onnx", tuple(prefix + f for f in here if not f.endswith(NOT_ONNX))
    if name.path:
        raise SourceError(f"{name}: {name.path} holds no ONNX build (genai_config.json)")
    shards = [f for f in here if f.endswith(".safetensors")]
    if shards:
        weights = [] if "model.safetensors.index.json" in here else (
            ["model.safetensors"] if "model.safetensors" in here else shards)
        return "safetensors", tuple(f for f in here if f in CONFIG_FILES) + tuple(weights)
    if ggufs:
        single = [f for f in ggufs if not is_split(f)]
        return "gguf", (single[0] if len(single) == 1 else _gguf_for(name, DEFAULT_QUANT, ggufs),)
    builds = sorted({f.rsplit("/", 1)[0] for f in files if f.endswith("/genai_config.json")})
    if builds:
        raise SourceError(f"{name}: the ONNX builds are in subfolders; name one: "
                          + ", ".join(f"{name.repo}/{b}" for b in builds))
    raise SourceError(f"{name}: no safetensors weights, GGUF file or ONNX build in {name.repo}")


def _gguf_for(name: HubName, quant: str, ggufs: list[str]) -> str:
    found = [f for f in ggufs if quant_of(f) == quant.upper()]
    if not found:
        raise SourceError(f"{name}: no {quant.upper()} GGUF file in {name.repo}{_available(ggufs)}")
    if all(is_split(f) for f in found):
        raise SourceError(f"{name}: the {quant.upper()} GGUF is split into parts ({found[0]}, ...), which is not "
                          "supported: merge them with llama.cpp's gguf-split --merge")
    return min((f for f in found if not is_split(f)), key=lambda f: (f.count("/"), f))


def _available(ggufs: list[str]) -> str:
    quants = sorted({quant_of(f) for f in ggufs})
    return f" (available: {', '.join(quants)})" if quants else " (it holds no GGUF files)"


def download(model: HubModel, progress: bool = True) -> Path:
    """The local copy a build reads (or, for an ONNX build, the folder loaded): a GGUF file or a folder in
    huggingface_hub's cache, at the resolved commit, holding only the files named. Asked by the revision's name,
    so that huggingface_hub records where it points, which is how the name resolves offline."""
    bar = None if progress else _Quiet  # None: huggingface_hub's own bars (HF_HUB_DISABLE_PROGRESS_BARS hides them)
    repo, revision = model.name.repo, model.name.revision
    with hub_errors(model.name):
        if model.kind == "gguf":
            path = Path(hf.hf_hub_download(repo, model.files[0], revision=revision, tqdm_class=bar))
            folder = path.parents[len(Path(model.files[0]).parts) - 1]
        else:
            folder = Path(hf.snapshot_download(repo, revision=revision, allow_patterns=list(model.files),
                                               tqdm_class=bar))
            index = folder / "model.safetensors.index.json"
            if model.kind == "safetensors" and index.is_file():
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                hf.snapshot_download(repo, revision=model.commit, allow_patterns=shards, tqdm_class=bar)
            path = folder / model.name.path if model.name.path else folder
    if folder.name != model.commit:
        raise SourceError(f"{model.name}: the revision moved from {model.commit[:12]} to {folder.name[:12]} while "
                          "downloading; try again")
    return path


def delete_downloads(repo: str, commits: set[str]) -> int:
    """Delete `repo`'s revisions at `commits` from huggingface_hub's cache (blobs other revisions share stay);
    the bytes freed."""
    try:
        cache = hf.scan_cache_dir(hf.constants.HF_HUB_CACHE)
    except errors.CacheNotFound:
        return 0
    hashes = [rev.commit_hash for r in cache.repos if r.repo_id == repo and r.repo_type == "model"
              for rev in r.revisions if rev.commit_hash in commits]
    if not hashes:
        return 0
    strategy = cache.delete_revisions(*hashes)
    strategy.execute()
    return strategy.expected_freed_size


class _Quiet(tqdm):
    def __init__(self, *args, **kwargs):
        kwargs.pop("name", None)
        super().__init__(*args, **{**kwargs, "disable": True})


@contextlib.contextmanager
def hub_errors(name: HubName):
    """huggingface_hub's errors -> one SourceError line naming what went wrong."""
    try:
        yield
    except errors.GatedRepoError:
        raise SourceError(f"{name}: {name.repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a "
                          "token of that account") from None
    except errors.RepositoryNotFoundError:
        raise SourceError(f"model not found: {name} is no local path and no repository on the Hub (a private one "
                          "needs HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise SourceError(f"{name}: {name.repo} has no revision {name.revision!r}") from None
    except errors.LocalEntryNotFoundError:
        raise SourceError(f"{name} is not in the cache and the Hub is out of reach (HF_HUB_OFFLINE, or no "
                          "network): pull it once online") from None
    except errors.RemoteEntryNotFoundError as e:
        raise SourceError(f"{name}: a file is missing on the Hub ({e.response.url})") from None
    except (errors.HfHubHTTPError, httpx2.HTTPError) as e:
        raise SourceError(f"{name}: the Hub answered {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
