"""`llm-runtime perplexity --model M [FILE.txt]`: perplexity over sliding windows, and KL divergence against a
reference model (`--reference M2`), like llama.cpp's `llama-perplexity [--kl-divergence]`."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

SAMPLE = "perplexity_sample.txt"  # in llm_runtime.prompts; its licence is in prompts/LICENSE-perplexity_sample.md


def add_arguments(p) -> None:
    p.add_argument("text", nargs="?", type=Path,
                   help=f"a UTF-8 text file (default: the bundled sample, llm_runtime/prompts/{SAMPLE})")
    p.add_argument("--model", default="default", help="built folder, Hugging Face folder, .gguf, Hub name or 'default'")
    p.add_argument("--reference", help="also report KL divergence, top-1 agreement and perplexity of this model")
    p.add_argument("--context", type=int, default=512, help="tokens per window")
    p.add_argument("--stride", type=int, help="tokens between window starts (default: --context, no overlap)")
    p.add_argument("--llama-cpp", action="store_true",
                   help="llama-perplexity's windows: whole chunks of --context tokens, each scoring its second half "
                        "(figures comparable with llama.cpp's on the same text)")
    p.add_argument("--max-tokens", type=int, help="score only the text's first N tokens")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    p.add_argument("--provider", default="cpu", help="execution provider (cpu, cuda, ...)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")


def run(args) -> int:
    from llm_runtime.evaluation.perplexity import LogitsModel, evaluate, llama_cpp_windows, windows

    if args.context < 2 or (args.stride is not None and not 1 <= args.stride <= args.context):
        raise ValueError("--context must be >= 2 and --stride between 1 and --context")
    if args.max_tokens is not None and args.max_tokens < 2:
        raise ValueError("--max-tokens must be >= 2")
    if args.llama_cpp and args.stride is not None:
        raise ValueError("--llama-cpp sets its own windows: give --context, not --stride")
    if args.text is None:
        text = resources.files("llm_runtime.prompts").joinpath(SAMPLE).read_text(encoding="utf-8")
    else:
        try:
            text = args.text.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{args.text} is not UTF-8 text") from None
    model = LogitsModel(args.model, args.provider, args.threads)
    tokens = model.tokenize(text)[:args.max_tokens]
    reference = None
    if args.reference:
        reference = LogitsModel(args.reference, args.provider, args.threads)
        if reference.folder.vocab_size != model.folder.vocab_size or reference.tokenize(text)[:len(tokens)] != tokens:
            raise ValueError("the reference model tokenizes the text differently: KL divergence needs one vocabulary")
    spans = (llama_cpp_windows(len(tokens), args.context) if args.llama_cpp
             else windows(len(tokens), args.context, args.stride or args.context))
    report = evaluate(model, tokens, spans, reference)
    print("\n".join(report.lines()))
    if args.json:
        args.json.write_text(json.dumps(vars(report), indent=2) + "\n")
    return 0
