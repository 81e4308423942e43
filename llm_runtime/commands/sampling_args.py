"""Sampling flags shared by the commands that generate."""
from __future__ import annotations

import argparse

from ..sampling_params import SamplingParams


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="built folder, Hugging Face folder, .gguf or 'default'")
    p.add_argument("--provider", default="cpu", help="cpu, cuda, tensorrt, dml, openvino, coreml or auto")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--min-tokens", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--presence-penalty", type=float, default=0.0)
    p.add_argument("--frequency-penalty", type=float, default=0.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")


def sampling_params(args) -> SamplingParams:
    return SamplingParams(max_tokens=args.max_tokens, min_tokens=args.min_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
                          frequency_penalty=args.frequency_penalty, seed=args.seed, stop=tuple(args.stop),
                          ignore_eos=args.ignore_eos)
