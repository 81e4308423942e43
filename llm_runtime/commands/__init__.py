"""Subcommands of `llm-runtime`, one module each (HELP, add_arguments, run)."""
from . import bench, build, chat, generate

COMMANDS = {"build": build, "generate": generate, "chat": chat, "bench": bench}
