"""Subcommands of `llm-runtime`, one module each (HELP, add_arguments, run)."""
from . import batch, bench, build, chat, generate, serve

COMMANDS = {"build": build, "generate": generate, "chat": chat, "batch": batch, "serve": serve, "bench": bench}
