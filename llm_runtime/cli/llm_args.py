"""The model, session, engine and speculation flags of every door that loads a model (generate, chat, batch,
serve, and their --ray forms), and the one function that turns them into an LLMConfig.

A flag left out keeps its dataclass default: the parser's defaults are None, so that parsing imports no engine
(`llm-runtime serve --help` stays fast) and no default is written twice; --help reads them from LLMConfig().
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_runtime.llm_config import LLMConfig

# EngineConfig field -> its flag's help (the flag is the field's name with dashes)
ENGINE_FLAGS = {
    "max_concurrency": "sequences generated at once, each in its own cache slot",
    "max_waiting": "queued requests beyond which new ones are refused (the server answers 429)",
    "token_budget": "tokens one engine step computes: every running decode, then prompt chunks",
    "chunk_size": "prompt tokens of one sequence per graph call",
    "max_cache_bytes": "cap on the KV cache's memory in bytes (default: no cap)",
}
# SpeculationConfig field -> its flag's help (and choices); read when --speculation is given
SPECULATION_FLAGS = {
    "num_speculative_tokens": ("drafts per verification at most", None),
    "suffix_cache": (("with --speculation suffix: one store of recent replies for every request (global), one per "
                      "API key (key), or each request's own text only (request)"), ("global", "key", "request")),
    "suffix_cache_mb": ("with --speculation suffix: the store's memory cap in MiB", None),
}


class ConfigDefaultsFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows each config flag's default, read from LLMConfig() only when help is printed (and a command's
    description as written)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = flag_defaults().get(action.dest)
        return action.help if default is None or action.help is None else f"{action.help} (default: {default})"


def flag_defaults() -> dict:
    """Flag dest -> the default it stands for, from the dataclasses."""
    from llm_runtime.adapters import LoraConfig
    from llm_runtime.llm_config import LLMConfig
    from llm_runtime.speculation import SpeculationConfig

    config, lora = LLMConfig(), LoraConfig()
    speculation = asdict(SpeculationConfig())
    return {"provider": config.provider, "threads": config.session.threads, **asdict(config.engine),
            **{name: speculation[name] for name in SPECULATION_FLAGS}, "max_loras": lora.max_slots,
            "lora_targets": ",".join(lora.targets)}


def add_llm_arguments(p: argparse.ArgumentParser, several: bool = False) -> None:
    """--model and the provider, thread, engine and speculation flags; `several`: --model may repeat (a list)."""
    p.formatter_class = ConfigDefaultsFormatter
    if several:
        p.add_argument("--model", action="append", help="built folder, Hugging Face folder, .gguf, Hub name "
                                                        "(org/name[@revision][:QUANT]) or 'default' (repeatable: "
                                                        "one engine per model, routed by name)")
    else:
        p.add_argument("--model", help="built folder, Hugging Face folder, .gguf, Hub name "
                                       "(org/name[@revision][:QUANT]) or 'default' (the default)")
    p.add_argument("--provider", help="cpu, cuda, tensorrt, dml, openvino, coreml or auto")
    p.add_argument("--threads", type=int, help="intra-op threads per engine (0: onnxruntime's default; on Ray, "
                                               "this machine's cores divided among the replicas)")
    for name, help in ENGINE_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help=help)
    p.add_argument("--speculation", choices=["ngram", "suffix"],
                   help="speculative decoding, drafts verified in the engine's step (same output): prompt lookup "
                        "(ngram), or prompt lookup and the suffix cache of recent replies (suffix)")
    for name, (help, choices) in SPECULATION_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=str if choices else int, choices=choices, help=help)
    lora = p.add_argument_group("LoRA adapters (docs/adapters.md): any of these serves adapters on a LoRA build")
    lora.add_argument("--lora", action="append", metavar="NAME=PATH",
                      help="load the adapter at PATH (a PEFT folder, a GGUF LoRA, an .onnx_adapter) as NAME "
                           "(repeatable); a request names it as its model")
    lora.add_argument("--lora-modules", dest="lora", action="extend", nargs="+", metavar="NAME=PATH",
                      help="the same as --lora, several at once (vLLM's spelling)")
    lora.add_argument("--enable-lora", action="store_true", default=None,
                      help="serve adapters even with none given at start (loaded later)")
    lora.add_argument("--max-loras", type=int, help="adapters resident in the slot table at once; more stay "
                                                    "loaded and take a slot of an idle one when used")
    lora.add_argument("--max-lora-mb", type=float, help="cap on the slot table's memory in MiB (default: no cap)")
    lora.add_argument("--lora-targets", help="the linears a model named by its source is built with LoRA inputs "
                                             "on, comma-separated")


def llm_config(args: argparse.Namespace, model: str | None = None) -> LLMConfig:
    """The parsed flags as the LLMConfig every door loads (`model`: one of serve's several --model)."""
    from llm_runtime.engine import EngineConfig
    from llm_runtime.llm_config import LLMConfig
    from llm_runtime.speculation import SpeculationConfig

    if model is None:
        model = args.model[0] if isinstance(args.model, list) else args.model
    engine = EngineConfig(**{name: value for name in ENGINE_FLAGS if (value := getattr(args, name)) is not None})
    speculation = args.speculation and SpeculationConfig(args.speculation, **{
        name: value for name in SPECULATION_FLAGS if (value := getattr(args, name)) is not None})
    return LLMConfig.of(model, args.provider, args.threads, engine=engine, speculation=speculation or None,
                        adapters=lora_adapters(args.lora), lora=lora_config(args))


def lora_adapters(specs: list[str] | None) -> dict[str, str]:
    """--lora NAME=PATH ... as {name: path}; a malformed or repeated name is a ValueError."""
    adapters: dict[str, str] = {}
    for spec in specs or ():
        name, eq, path = spec.partition("=")
        if not eq or not name.strip() or not path:
            raise ValueError(f"--lora takes NAME=PATH, got {spec!r}")
        if name in adapters:
            raise ValueError(f"--lora names {name!r} twice")
        adapters[name] = path
    return adapters


def lora_config(args: argparse.Namespace):
    """The LoraConfig of the LoRA flags (their left-out ones at its defaults), or None when none is given (an
    adapter to load makes LLMConfig take the defaults)."""
    from llm_runtime.adapters import LoraConfig

    given = {"max_slots": args.max_loras, "targets": args.lora_targets and args.lora_targets.split(","),
             "max_bytes": args.max_lora_mb and int(args.max_lora_mb * 2**20)}
    given = {k: v for k, v in given.items() if v is not None}
    return LoraConfig(**given) if given or args.enable_lora else None

