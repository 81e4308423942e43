"""`--verify`: compare a build's logits with transformers on a chat prompt (needs torch, a test dependency)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from llm_runtime.graph.load_warnings import without_default_input_warnings

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def verify(source: str | Path, folder: Path) -> float:
    """Largest absolute logit difference over the prompt between the build and transformers."""
    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("--verify needs torch and transformers (pip install 'llm-runtime[dev]')")
    import onnxruntime as ort
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    path = Path(source)
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = np.array([Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROMPT).ids], np.int64)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(ids)).logits.float().numpy()
    with without_default_input_warnings():
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for i in session.get_inputs():
        if i.name.startswith("past_key_values"):
            dtype = np.float16 if "float16" in i.type else np.float32
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), dtype)
    logits = session.run(["logits"], feeds)[0]
    return float(np.abs(logits - ref).max())
