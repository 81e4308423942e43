"""Subcommands of `llm-runtime`, one module each (HELP, add_arguments, run)."""
from . import build

COMMANDS = {"build": build}
