"""Subcommands of `llm-runtime`, one module each (add_arguments, run); `llm_runtime.cli.main` names them."""
