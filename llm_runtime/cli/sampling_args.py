"""Sampling flags shared by the commands that generate."""
from __future__ import annotations

import argparse

from llm_runtime.openai.fields import describe
from llm_runtime.openai.request import request_params
from llm_runtime.sampling.fields import REQUEST_FIELDS, Kind
from llm_runtime.sampling.params import DEFAULT_TEMPERATURE, SamplingParams

CLI_TEMPERATURE = 0.0  # the command line is greedy unless told otherwise, and says so in --help
FLAGS = tuple(f for f in REQUEST_FIELDS if f.flag)
_ACTIONS = {Kind.INT: {"type": int}, Kind.REAL: {"type": float}, Kind.BOOL: {"action": "store_true", "default": None},
            Kind.STRINGS: {"action": "append"}}  # a repeated flag gives the list


def add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    """The sampling flags, named as the OpenAI request fields they become (--max-tokens is max_tokens)."""
    for f in FLAGS:
        kw = {**_ACTIONS[f.kind], "help": describe(f) + ("; repeatable" if f.kind is Kind.STRINGS else "")}
        if f.name == "temperature":  # the command line's own default
            kw.update(default=CLI_TEMPERATURE, help=f"default: {CLI_TEMPERATURE:g} (greedy) on the command line; the "
                      f"Python API, the server and batch jobs default to {DEFAULT_TEMPERATURE:g}, as OpenAI does")
        p.add_argument("--" + f.name.replace("_", "-"), **kw)


def request_body(args) -> dict:
    """The flags as an OpenAI request body's fields (flags not given are left out)."""
    return {f.name: value for f in FLAGS if (value := getattr(args, f.name)) is not None}


def sampling_params(args) -> SamplingParams:
    """The flags through the one request mapping every door uses."""
    return request_params(request_body(args), "completions")
