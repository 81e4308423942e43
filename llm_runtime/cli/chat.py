"""`llm-runtime chat --model M`: an interactive chat with history; /reset clears it, /exit leaves."""
from __future__ import annotations

import sys
from dataclasses import replace

from .llm_args import add_llm_arguments, llm_config
from .sampling_args import add_sampling_arguments, sampling_params


def add_arguments(p) -> None:
    add_llm_arguments(p)
    p.add_argument("--adapter", help="generate with the LoRA adapter of this name (one of --lora NAME=PATH)")
    p.add_argument("--system", help="a system message")
    add_sampling_arguments(p)


def run(args) -> int:
    from llm_runtime.llm import LLM

    params = replace(sampling_params(args), adapter=args.adapter)
    llm = LLM(llm_config(args))
    start = [{"role": "system", "content": args.system}] if args.system else []
    history = list(start)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(">>> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = list(start)
            print("(history cleared)", flush=True)
            continue
        history.append({"role": "user", "content": text})
        reply = []
        try:
            for chunk in llm.chat_stream(history, params):
                reply.append(chunk.text)
                print(chunk.text, end="", flush=True)
        except ValueError as e:  # e.g. the conversation outgrew the context: say so, keep the session
            history.pop()
            print(f"error: {e}", file=sys.stderr, flush=True)
            continue
        print(flush=True)
        history.append({"role": "assistant", "content": "".join(reply)})
