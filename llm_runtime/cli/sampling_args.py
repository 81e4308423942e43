"""Sampling flags shared by the commands that generate."""
from __future__ import annotations

import argparse

from llm_runtime.openai.request import request_params
from llm_runtime.sampling.params import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, SamplingParams

CLI_TEMPERATURE = 0.0  # the command line is greedy unless told otherwise, and says so in --help
FLAG_FIELDS = ("max_tokens", "min_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
               "presence_penalty", "frequency_penalty", "seed", "stop", "ignore_eos")


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling flags, named as the OpenAI request fields they become (--max-tokens is max_tokens)."""
    p.add_argument("--max-tokens", type=int, help=f"default: min({DEFAULT_MAX_TOKENS}, the context left after the "
                                                   f"prompt), as at every door")
    p.add_argument("--min-tokens", type=int)
    p.add_argument("--temperature", type=float, default=CLI_TEMPERATURE,
                   help=f"default: {CLI_TEMPERATURE:g} (greedy) on the command line; the Python API, the server "
                        f"and batch jobs default to {DEFAULT_TEMPERATURE:g}, as OpenAI does")
    p.add_argument("--top-k", type=int, help="0: off")
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--presence-penalty", type=float)
    p.add_argument("--frequency-penalty", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", default=None)


def request_body(args) -> dict:
    """The flags as an OpenAI request body's fields (flags not given are left out)."""
    return {name: value for name in FLAG_FIELDS if (value := getattr(args, name)) is not None}


def sampling_params(args) -> SamplingParams:
    """The flags through the one request mapping every door uses."""
    return request_params(request_body(args), "completions")
