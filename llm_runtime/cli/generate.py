"""`llm-runtime generate --model M "prompt"`: stream a completion to stdout."""
from __future__ import annotations

import sys
from dataclasses import replace

from .llm_args import add_llm_arguments, llm_config
from .sampling_args import add_sampling_arguments, sampling_params


def add_arguments(p) -> None:
    p.add_argument("prompt", help="the prompt text ('-' reads standard input)")
    p.add_argument("--chat", action="store_true", help="send the prompt as a user message through the chat template")
    add_llm_arguments(p)
    p.add_argument("--adapter", help="generate with the LoRA adapter of this name (one of --lora NAME=PATH)")
    add_sampling_arguments(p)


def run(args) -> int:
    from llm_runtime.llm import LLM

    params = replace(sampling_params(args), adapter=args.adapter)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    llm = LLM(llm_config(args))
    chunks = llm.chat_stream([{"role": "user", "content": prompt}], params) if args.chat else llm.stream(prompt, params)
    for chunk in chunks:
        sys.stdout.write(chunk.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
