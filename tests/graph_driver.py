"""Deliberately plain drivers for built graphs: ours (growing past tensors, no IO binding) and onnxruntime-genai's
greedy search.

It checks the graph on its own, independently of the runtime's cache and binding logic.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from llm_runtime.kv_cache.kv_cache import WINDOW_SLACK


class PlainDecoder:
    def __init__(self, folder: Path):
        folder = Path(folder)
        dec = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        manifest = folder / "llm_runtime.json"
        windows = json.loads(manifest.read_text()).get("window_cache", {}) if manifest.exists() else {}
        self.window_rows = {int(k): v + WINDOW_SLACK for k, v in windows.items()}
        self.layers, self.kv_heads, self.head_dim = dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.dtype = np.float16 if "float16" in self.session.get_inputs()[2].type else np.float32

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """Growing past tensors start empty; window-sized ones have their fixed size from the start."""
        return [np.zeros((batch, self.kv_heads, self.window_rows.get(i // 2, 0), self.head_dim), self.dtype)
                for i in range(2 * self.layers)]

    # ids [B, S], mask [B, T], past 2L x [B, kvh, P, hd] -> logits [B, S, V], present
    def step(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray], **extra):
        feeds = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64), **extra}
        for i in range(self.layers):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = past[2 * i], past[2 * i + 1]
        out = self.session.run(None, feeds)
        return out[0], out[1:]

    def greedy(self, prompt: list[int], steps: int) -> list[int]:
        ids = np.array([prompt])
        logits, past = self.step(ids, np.ones_like(ids), self.empty_past(1))
        out = [int(logits[0, -1].argmax())]
        for _ in range(steps - 1):
            total = len(prompt) + len(out)
            logits, past = self.step(np.array([[out[-1]]]), np.ones((1, total)), past)
            out.append(int(logits[0, -1].argmax()))
        return out


def genai_greedy(model, prompt: list[int], new_tokens: int, ignore_eos: bool = False) -> list[int]:
    """onnxruntime-genai's greedy search from `prompt` (`model`: an og.Model); stops at the model's eos (unless
    `ignore_eos`) or after `new_tokens`."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    length = len(prompt) + new_tokens
    params.set_search_options(max_length=length, do_sample=False, **({"min_length": length} if ignore_eos else {}))
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    out = []
    while not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out

