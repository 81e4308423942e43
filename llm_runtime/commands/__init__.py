"""Subcommands of `llm-runtime`, one module each (HELP, add_arguments, run)."""
from . import build, chat, generate

COMMANDS = {"build": build, "generate": generate, "chat": chat}
