"""The `llm-runtime` command: subcommands dispatched by module name, only the chosen one imported.

A door's command lives with its door (`serve` in the server package), so the runtime never imports the server.
"""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

# name -> (module with add_arguments(parser) and run(args) -> exit code, one-line help)
COMMANDS = {
    "build": ("llm_runtime.cli.build",
              "build an ONNX decoder folder from a Hugging Face folder, a .gguf file or 'default'"),
    "pull": ("llm_runtime.cli.pull",
             "download a Hub model (org/name, org/name@revision, org/name:QUANT) and build it into the cache"),
    "list": ("llm_runtime.cli.listing", "the Hub models in the cache: name, revision, recipe, size, last used"),
    "rm": ("llm_runtime.cli.remove", "delete a Hub model's builds and downloaded files from the cache"),
    "generate": ("llm_runtime.cli.generate", "complete a prompt, streaming to stdout"),
    "chat": ("llm_runtime.cli.chat", "interactive chat with history (/reset clears it, /exit or Ctrl-D leaves)"),
    "batch": ("llm_runtime.cli.batch",
              "generate for every line of a JSONL file (OpenAI batch output; re-running resumes)"),
    "serve": ("llm_runtime.server.cli",
              "serve an OpenAI-compatible API (chat, completions, responses; streaming) and a chat page"),
    "perplexity": ("llm_runtime.cli.perplexity",
                   "perplexity of a model on a text, and KL divergence from a reference"),
    "adapter": ("llm_runtime.cli.adapter",
                "convert a LoRA adapter (PEFT folder, GGUF LoRA, .onnx_adapter) to our folder or an .onnx_adapter"),
}


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; only `command`'s module is imported, to add its flags."""
    p = argparse.ArgumentParser(prog="llm-runtime", description="Run decoder LLMs on ONNX Runtime.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and choices")
    p.add_argument("--version", action=VersionAction, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help) in COMMANDS.items():
        sp = sub.add_parser(name, help=help, description=help)
        if name == command:
            import_module(module).add_arguments(sp)
    return p


class VersionAction(argparse.Action):
    """`--version`: argparse's own action reads the version when the parser is made; this one only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"llm-runtime {version()}")
        parser.exit()


def version() -> str:
    """This code's version: a checkout's pyproject.toml (what runs may be a checkout on PYTHONPATH, not the
    installed copy), else the installed distribution's metadata."""
    from importlib import metadata
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "kv_cache" / "__init__.py").is_file():
        import tomllib

        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        if project["name"] == "llm-runtime":
            return project["version"]
    try:
        return metadata.version("llm-runtime")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """Run `llm-runtime ARGV`; bad input is one `error:` line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)  # the only top-level option is a flag
    args = parser(command).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return import_module(COMMANDS[args.command][0]).run(args) or 0
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input: one `error:` line, never a traceback. Imported only when a command
    runs, so that --help and usage errors load no runtime and no onnxruntime."""
    from llm_runtime.graph.providers import ProviderError
    from llm_runtime.kv_cache import CacheFullError
    from llm_runtime.model_builder.source import SourceError
    from llm_runtime.models.folder import ModelFolderError

    return SourceError, ModelFolderError, ProviderError, CacheFullError, ValueError, FileNotFoundError


if __name__ == "__main__":
    sys.exit(main())
