"""Subcommands of `llm-runtime`, one module each (HELP, add_arguments, run)."""
from . import batch, bench, build, chat, generate

COMMANDS = {"build": build, "generate": generate, "chat": chat, "batch": batch, "bench": bench}
