"""Quality of the default model's builds against llama.cpp's own run of the same GGUF file, on the same tokens.

llama.cpp: `llama-quantize --allow-requantize FILE F32` makes its fp32 reference (the file's blocks dequantized),
`llama-perplexity --kl-divergence-base` saves that reference's logits, and `--kl-divergence` scores the file
against them. Ours: `llm-runtime perplexity --llama-cpp` (llama-perplexity's windows) of each build against our fp32
build. Both score the second half of each 512-token chunk of prompts/perplexity_sample.txt.

    python benchmarks/llama_cpp_quality.py --llama-cpp-bin DIR [--builds default,int8,float] [--work DIR]

DIR holds llama-perplexity and llama-quantize (built from llama.cpp's source, e.g. the copy vendored in
`pip download --no-deps llama-cpp-python==0.3.36`; see benchmarks/results/2026-12-02-avx512.md).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from llm_runtime.evaluation.perplexity import LogitsModel, evaluate, llama_cpp_windows
from llm_runtime.models.default import default_gguf

ROOT = Path(__file__).resolve().parent.parent
TEXT = ROOT / "prompts" / "perplexity_sample.txt"
BUILDS = {"default": [], "int8": ["--activations", "int8"], "float": ["--activations", "float"]}


def llama_cpp(bin_dir: Path, work: Path, gguf: Path) -> dict[str, float]:
    """llama.cpp's figures for the file: PPL of the file and of its fp32 dequantization, KL mean / p99, top-1."""
    f32, base = work / "f32.gguf", work / "f32.kld"
    subprocess.run([bin_dir / "llama-quantize", "--allow-requantize", gguf, f32, "F32"], check=True,
                   capture_output=True)
    subprocess.run([bin_dir / "llama-perplexity", "-m", f32, "-f", TEXT, "-c", "512", "-t", "2",
                    "--kl-divergence-base", base], check=True, capture_output=True)
    out = subprocess.run([bin_dir / "llama-perplexity", "-m", gguf, "-c", "512", "-t", "2",
                          "--kl-divergence-base", base, "--kl-divergence"], check=True, capture_output=True,
                         text=True)
    log = out.stdout + out.stderr

    def figure(label: str, group: int = 1) -> float:
        return float(re.search(re.escape(label) + r"\s*:\s*([-\d.]+)(?:\s*±\s*([-\d.]+))?", log).group(group))

    return {"ppl": figure("Mean PPL(Q)"), "ref": figure("Mean PPL(base)"), "ratio": figure("Mean PPL(Q)/PPL(base)"),
            "ratio_se": figure("Mean PPL(Q)/PPL(base)", 2), "kl": figure("Mean    KLD"),
            "p99": figure("99.0%   KLD"), "top1": figure("Same top p") / 100}


def ours(work: Path, names: list[str]) -> dict[str, dict[str, float]]:
    fp32 = work / "fp32"
    subprocess.run([sys.executable, "-m", "llm_runtime.cli.main", "build", "default", "-o", fp32, "--precision", "fp32",
                    "--force"], check=True, capture_output=True)
    ref = LogitsModel(fp32, threads=2, progress=False)
    tokens = ref.tokenize(TEXT.read_text(encoding="utf-8"))
    spans = llama_cpp_windows(len(tokens), 512)
    out = {}
    for name in names:
        folder = work / name
        subprocess.run([sys.executable, "-m", "llm_runtime.cli.main", "build", "default", "-o", folder, "--force",
                        *BUILDS[name]], check=True, capture_output=True)
        r = evaluate(LogitsModel(folder, threads=2, progress=False), tokens, spans, ref, progress=False)
        out[name] = {"ppl": r.perplexity, "ref": r.ref_perplexity, "ratio": r.ratio, "ratio_se": r.ratio_se,
                     "kl": r.kl_mean, "p99": r.kl_p99, "top1": r.top1}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp-bin", type=Path, required=True)
    ap.add_argument("--builds", default="default,int8,float")
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="llama-cpp-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = {"llama.cpp (its own run of the file)": llama_cpp(args.llama_cpp_bin, work, default_gguf())}
    rows |= {f"ours, build default {' '.join(BUILDS[n])}".strip(): f for n, f in
             ours(work, args.builds.split(",")).items()}
    print("| run | perplexity | its fp32 reference | vs reference | KL mean | KL p99 | top-1 |")
    print("|---|---|---|---|---|---|---|")
    for name, f in rows.items():
        print(f"| {name} | {f['ppl']:.4f} | {f['ref']:.4f} | {100 * (f['ratio'] - 1):+.3f}% ± {100 * f['ratio_se']:.3f} | "
              f"{f['kl']:.6f} | {f['p99']:.6f} | {100 * f['top1']:.1f}% |")


if __name__ == "__main__":
    main()
