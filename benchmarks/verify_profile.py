"""Why does a verification call cost more than a decode call? onnxruntime's profiler, op by op, 1 vs N tokens.

    python benchmarks/verify_profile.py [--model default] [--also FOLDER ...] [--tokens 4] [--calls 60] [--variants]

Runs one sequence's graph call over 1 and over N new tokens (200 cached) in a profiling session
(`SessionOptions.enable_profiling`), sums each op type's kernel time per call, and prints the ratio N/1 per op
type and per MatMulNBits role (q/k/v, o, gate/up, down, lm_head). `--variants` also profiles copies of the folder
whose MatMulNBits nodes run at `accuracy_level` 0 (float activations), and builds of the default model at block
sizes 64 and 128, to see what the builder or session options change. `--also` profiles other built folders too
(e.g. an `--activations int8` build beside the default `mixed` one).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from llm_runtime.graph.runner import ModelRunner, Step
from llm_runtime.kv_cache import KVCache
from llm_runtime.models.folder import ModelFolder
from llm_runtime.models.resolver import resolve_model


def role(node: str) -> str:
    """A MatMulNBits node's place in the layer, from its hierarchical name."""
    for key in ("lm_head", "qkv", "q_proj", "k_proj", "v_proj", "o_proj", "gate", "up_proj", "down_proj"):
        if key in node:
            return key
    return "other"


def profile(folder_path: Path, tokens: int, calls: int, threads: int) -> dict[str, float]:
    """Kernel microseconds per call by op type (and `MatMulNBits:role`), plus `wall` (median call, us)."""
    folder = ModelFolder.open(folder_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "prof")
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(folder.model_file), opts, providers=["CPUExecutionProvider"])
    c = folder.contract
    cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=512)
    runner = ModelRunner(folder, session)
    step = Step(np.full((1, tokens), 100, np.int64), np.array([200 + tokens]), np.array([tokens]), np.arange(tokens))
    walls = []
    for i in range(calls + 5):
        start = time.perf_counter()
        runner.run(step, cache)
        if i >= 5:
            walls.append(time.perf_counter() - start)
    events = json.loads(Path(session.end_profiling()).read_text())
    sums: dict[str, float] = defaultdict(float)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    skip_before = runs[5]["ts"] if len(runs) > 5 else 0  # leave out the warm-up calls
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < skip_before:
            continue
        op = e["args"]["op_name"]
        sums[op] += e["dur"]
        if op == "MatMulNBits":
            sums[f"MatMulNBits:{role(e['name'])}"] += e["dur"]
    out = {k: v / calls for k, v in sums.items()}
    out["wall"] = 1e6 * statistics.median(walls)
    return out


def accuracy_copy(folder: Path, level: int, into: Path) -> Path:
    """A copy of `folder` whose MatMulNBits nodes have accuracy_level `level` (the weights file is copied: onnxruntime refuses external data outside the model folder)."""
    into.mkdir(parents=True)
    for f in folder.iterdir():
        if f.name != "model.onnx":
            shutil.copy(f, into / f.name)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for a in node.attribute:
                if a.name == "accuracy_level":
                    a.i = level
    onnx.save(model, str(into / "model.onnx"))
    return into


def block_build(block: int, into: Path) -> Path:
    from llm_runtime.model_builder.build import BuildOptions, build
    from llm_runtime.models.default import default_gguf

    build(default_gguf(), into, BuildOptions(block_size=block), progress=False)
    return into


def report(name: str, one: dict[str, float], many: dict[str, float], tokens: int) -> None:
    print(f"\n== {name}: call over 1 token {one['wall']:.0f} us, over {tokens} tokens {many['wall']:.0f} us "
          f"({many['wall'] / one['wall']:.2f}x)")
    total1 = sum(v for k, v in one.items() if ":" not in k and k != "wall")
    totaln = sum(v for k, v in many.items() if ":" not in k and k != "wall")
    print(f"{'op':34s} {'1 tok us':>9s} {f'{tokens} tok us':>9s} {'ratio':>6s} {'share of extra':>14s}")
    for k in sorted(one, key=lambda k: -one[k]):
        if k == "wall" or one[k] < 5:
            continue
        extra = (many.get(k, 0) - one[k]) / max(totaln - total1, 1e-9)
        print(f"{k:34s} {one[k]:9.0f} {many.get(k, 0):9.0f} {many.get(k, 0) / one[k]:6.2f} {100 * extra:13.0f}%")
    print(f"{'kernels total':34s} {total1:9.0f} {totaln:9.0f} {totaln / total1:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--also", nargs="*", default=[], help="other built folders to profile the same way")
    args = ap.parse_args()
    base = resolve_model(args.model)
    folders = {f"as built ({Path(base).name})": Path(base), **{f"{Path(f).name}": Path(f) for f in args.also}}
    tmp = Path(tempfile.mkdtemp())
    if args.variants:
        folders["accuracy_level 0"] = accuracy_copy(Path(base), 0, tmp / "acc0")
        folders["block 64"] = block_build(64, tmp / "b64")
        folders["block 128"] = block_build(128, tmp / "b128")
    try:
        for name, path in folders.items():
            one = profile(path, 1, args.calls, args.threads)
            many = profile(path, args.tokens, args.calls, args.threads)
            report(name, one, many, args.tokens)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
