"""MatMulNBits kernel paths on the default model's shapes, side by side in one run: zero points none / packed
uint8 / float, 4 and 8 bits, blocks 16 and 32, at one token (decode) and 64 tokens (a prefill chunk).

8-bit with float zero points is refused by onnxruntime's CPU kernel. "zp 0 + offset MatMul" is the exact
two-part form of an asymmetric block (d*q + m): MatMulNBits with zero points 0, plus the block sums of x times
the offsets m (ReduceSum over each block, a small float MatMul, an Add).

Each encoding runs as a graph of `--repeat` chained identical MatMulNBits nodes over one weight (so per-call
overhead is amortised like in the real model) and the median time per node is reported. The encodings are
timed in interleaved rounds, so load on the machine hits them alike.

    python benchmarks/nbits_paths.py [--threads 2] [--rounds 5] [--tokens 1,64]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from llm_runtime.model_builder import quantize

SHAPES = {"qkv 960x576": (960, 576), "o 576x576": (576, 576), "gate/up 1536x576": (1536, 576),
          "down 576x1536": (576, 1536), "lm_head 49152x576": (49152, 576)}
ENCODINGS = {  # name -> (bits, block, zero points: None | "uint8" | "float")
    "4-bit b32, no zp": (4, 32, None),
    "4-bit b32, uint8 zp": (4, 32, "uint8"),
    "4-bit b32, float zp": (4, 32, "float"),
    "4-bit b16, no zp": (4, 16, None),
    "8-bit b32, no zp": (8, 32, None),
    "8-bit b32, uint8 zp": (8, 32, "uint8"),
    "4-bit b32, zp 0 + offset MatMul": (4, 32, "split"),
    "8-bit b16, no zp": (8, 16, None),
}


def session(n: int, k: int, bits: int, block: int, zp: str | None, repeat: int, level: int,
            threads: int) -> ort.InferenceSession:
    """A chain x -> MatMulNBits -> Slice/Pad back to K -> ... of `repeat` nodes sharing one weight."""
    rng = np.random.default_rng(0)
    bq = quantize.quantize_blockwise(rng.standard_normal((n, k)).astype(np.float32), bits, block,
                                     symmetric=zp is None)
    inits = [numpy_helper.from_array(bq.q, "B"), numpy_helper.from_array(bq.scales, "scales")]
    names = ["x0", "B", "scales"]
    if zp == "split":
        bq = quantize.BlockQuant(bq.q, bq.scales, quantize.pack_zero_points(np.zeros(bq.scales.shape, np.uint8), bits),
                                 bits, block, (n, k))
        kb = bq.scales.shape[1]
        inits += [numpy_helper.from_array(bq.zero_points, "zp"),
                  numpy_helper.from_array(rng.standard_normal((kb, n)).astype(np.float32), "offsets"),
                  numpy_helper.from_array(np.array([-1, kb, block], np.int64), "blocks_shape"),
                  numpy_helper.from_array(np.array([-1], np.int64), "last")]
        names.append("zp")
    elif zp == "uint8":
        inits.append(numpy_helper.from_array(bq.zero_points, "zp"))
        names.append("zp")
    elif zp == "float":
        zf = quantize.zero_points_of(bq).astype(np.float32) + rng.uniform(-0.5, 0.5, bq.scales.shape).astype(np.float32)
        inits.append(numpy_helper.from_array(zf.reshape(-1), "zp"))
        names.append("zp")
    nodes, x = [], "x0"
    for i in range(repeat):
        y = f"y{i}"
        nodes.append(helper.make_node("MatMulNBits", [x, *names[1:]], [y], domain="com.microsoft", K=k, N=n,
                                      bits=bits, block_size=block, accuracy_level=level))
        if zp == "split":
            nodes += [helper.make_node("Reshape", [x, "blocks_shape"], [f"xb{i}"]),
                      helper.make_node("ReduceSum", [f"xb{i}", "last"], [f"xs{i}"], keepdims=0),
                      helper.make_node("MatMul", [f"xs{i}", "offsets"], [f"xo{i}"]),
                      helper.make_node("Add", [y, f"xo{i}"], [f"ya{i}"])]
            y = f"ya{i}"
        if n != k:  # feed the next node K columns again: take or tile the first K of N
            reps = -(-k // n)
            if reps > 1:
                nodes.append(helper.make_node("Concat", [y] * reps, [f"c{i}"], axis=-1))
                y = f"c{i}"
            nodes.append(helper.make_node("Slice", [y, "zero", "kk", "minus1"], [f"s{i}"]))
            y = f"s{i}"
        x = y
    inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([k], np.int64), "kk"),
              numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["m", k])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=10)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def time_us(sess: ort.InferenceSession, x: np.ndarray, reps: int, repeat: int) -> float:
    for _ in range(3):
        sess.run(None, {"x0": x})
    t = []
    for _ in range(reps):
        start = time.perf_counter()
        sess.run(None, {"x0": x})
        t.append(time.perf_counter() - start)
    return 1e6 * statistics.median(t) / repeat


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--tokens", default="1,64")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated keys of SHAPES")
    p.add_argument("--level", type=int, default=4, help="MatMulNBits accuracy_level (4: the CPU build's)")
    a = p.parse_args()
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, accuracy_level {a.level}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for tokens in map(int, a.tokens.split(",")):
        for shape in a.shapes.split(","):
            n, k = SHAPES[shape]
            sessions = {e: session(n, k, *spec, a.repeat, a.level, a.threads) for e, spec in ENCODINGS.items()}
            x = np.random.default_rng(1).standard_normal((tokens, k)).astype(np.float32)
            times = {e: [] for e in ENCODINGS}
            for _ in range(a.rounds):
                for e, s in sessions.items():
                    times[e].append(time_us(s, x, a.reps, a.repeat))
            base = statistics.median(times["4-bit b32, no zp"])
            print(f"\n{tokens} token(s), {shape}")
            for e, t in times.items():
                m = statistics.median(t)
                print(f"  {e:22s} {m:9.1f} us  {m / base:6.2f}x")


if __name__ == "__main__":
    main()
