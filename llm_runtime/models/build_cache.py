"""The builds of Hub models: one folder per repository, resolved commit, variant (GGUF file, subfolder) and
build recipe (BuildOptions.tag), under $LLM_RUNTIME_HOME/hub/, each with its record (entry.json: what it was
built from; its modification time is when it was last used) and a lock file, so that concurrent first uses of
one name build once.

    hub/Qwen--Qwen2.5-0.5B-Instruct--a8b2c3d4e5f6--int4-cpu-exact-search-mixed-r2/
        entry.json      {"name", "repo", "revision", "commit", "variant", "recipe", "folder", "source"}
        model/          the built folder (an ONNX repository's entry points at its snapshot instead)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from .default import home
from .hub_name import HubName, quant_of

RECORD = "entry.json"


@dataclass(frozen=True)
class CacheEntry:
    name: str  # the Hub name as given ("org/name:Q4_K_M")
    repo: str
    revision: str  # as asked ("main" when none was)
    commit: str
    variant: str  # the GGUF file's stem or the subfolder; "" for the repository itself
    recipe: str  # BuildOptions.tag, or "onnx" for a repository of ONNX builds
    folder: str  # what loads: the built folder, or an ONNX repository's snapshot folder
    source: str  # the downloaded source, in huggingface_hub's cache

    @property
    def last_used(self) -> float:
        return (root() / self.key / RECORD).stat().st_mtime

    @property
    def key(self) -> str:
        return entry_key(self.repo, self.commit, self.variant, self.recipe)


def root() -> Path:
    return home() / "hub"


def entry_key(repo: str, commit: str, variant: str, recipe: str) -> str:
    return "--".join([repo.replace("/", "--"), commit[:12]] + ([variant.replace("/", "--")] if variant else [])
                     + [recipe])


def lock(key: str) -> FileLock:
    """The lock that one build of `key` holds from download to record."""
    root().mkdir(parents=True, exist_ok=True)
    return FileLock(root() / f"{key}.lock")


def build_folder(key: str) -> Path:
    return root() / key / "model"


def find(key: str) -> CacheEntry | None:
    """The recorded entry of `key`, marked as used now; None when it was never finished."""
    record = root() / key / RECORD
    if not record.is_file():
        return None
    os.utime(record)
    return CacheEntry(**json.loads(record.read_text()))


def record(entry: CacheEntry) -> None:
    """Write `entry`'s record last, through a rename: a folder without one is an unfinished build."""
    path = root() / entry.key / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(entry), indent=1))
    tmp.rename(path)


def entries() -> list[CacheEntry]:
    """Every finished entry, the most recently used first."""
    found = [CacheEntry(**json.loads(p.read_text())) for p in root().glob(f"*/{RECORD}")] if root().is_dir() else []
    return sorted(found, key=lambda e: -e.last_used)


def matching(name: HubName) -> list[CacheEntry]:
    """The entries `name` covers: its repository's, narrowed by a revision (a branch, a tag, a commit or its
    prefix), a :QUANT or a path when the name gives one."""
    def covers(e: CacheEntry) -> bool:
        return (e.repo == name.repo
                and (name.revision is None or name.revision == e.revision or e.commit.startswith(name.revision))
                and (name.quant is None or quant_of(e.variant + ".gguf") == name.quant.upper())
                and (name.path is None or e.variant in (name.path, name.path.removesuffix(".gguf").rsplit("/", 1)[-1])))
    return [e for e in entries() if covers(e)]


def remove(entry: CacheEntry) -> None:
    """Delete the entry's build (its record first, so that a half-deleted build is never taken for a whole one)."""
    folder = root() / entry.key
    with lock(entry.key):
        (folder / RECORD).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def size_on_disk(entry: CacheEntry) -> int:
    """Bytes of the build and of its downloaded source files (links into huggingface_hub's blobs followed)."""
    paths = {Path(entry.folder), Path(entry.source)}
    files = {p.resolve() for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()}
    return sum(p.stat().st_size for p in files)


def age(seconds: float) -> str:
    """`seconds` ago in the largest whole unit: "just now", "5 minutes ago", "3 days ago"."""
    ago = time.time() - seconds
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if ago >= length:
            n = int(ago // length)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"
