"""The reference figure for `llm-runtime perplexity`: transformers in fp32 (torch) on a GGUF's dequantized weights,
over the same windows and scoring, tokenized by our build's tokenizer (which matches transformers' for the
default model, tests/test_gguf_build.py).

    python benchmarks/perplexity_transformers.py [--gguf default] [--folder BUILT] [--context 512] [TEXT]
"""
from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from llm_runtime.evaluation.perplexity import Report, Scores, windows
from llm_runtime.models.default import default_gguf
from llm_runtime.models.folder import ModelFolder
from llm_runtime.models.resolver import resolve_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("text", nargs="?", type=Path)
    ap.add_argument("--gguf", default="default")
    ap.add_argument("--folder", default="default", help="a built folder of the same model, for its tokenizer")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--stride", type=int)
    a = ap.parse_args()
    text = a.text.read_text() if a.text else \
        resources.files("llm_runtime.prompts").joinpath("perplexity_sample.txt").read_text()
    gguf = default_gguf() if a.gguf == "default" else Path(a.gguf)
    tokens = ModelFolder.open(resolve_model(a.folder)).tokenizer.encode(text, add_special_tokens=False).ids
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    scores = Scores()
    with torch.no_grad():
        for w in windows(len(tokens), a.context, a.stride or a.context):
            ids = tokens[w.begin:w.end]
            first = w.scored - w.begin - 1
            logits = model(torch.tensor([ids])).logits[0].numpy()
            scores.add(logits[first:-1], np.asarray(ids[first + 1:]), None)
    print("\n".join(Report.of(scores).lines()))


if __name__ == "__main__":
    main()
