"""The `llm-runtime` command: one subcommand per module in `llm_runtime.commands`."""
from __future__ import annotations

import argparse
import logging
import sys

from .commands import COMMANDS
from .errors import USER_ERRORS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-runtime", description="Run decoder LLMs on ONNX Runtime.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and choices")
    sub = p.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command].run(args) or 0
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
