"""The sampling fields' one declaration: every door's version of a field is the one derived from its row."""
import argparse
import dataclasses

import pytest
from pydantic import ValidationError

from llm_runtime.cli.sampling_args import add_sampling_arguments, request_body
from llm_runtime.errors import ParameterError
from llm_runtime.openai.fields import FIELDS, Policy
from llm_runtime.sampling.fields import LIMITS, REQUEST_FIELDS, Kind, Limit
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.server.response_request import SAMPLING
from llm_runtime.server.response_schemas import ResponsesBody
from llm_runtime.server.schemas import ChatRequest, CompletionRequest

MODELS = {"chat": (ChatRequest, {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
          "completions": (CompletionRequest, {"model": "m", "prompt": "p"}),
          "responses": (ResponsesBody, {"model": "m", "input": "x"})}
ATTRIBUTES = {f.name: f for f in dataclasses.fields(SamplingParams)}


def outside(limit: Limit, kind: Kind):
    """A value just outside `limit`, of the field's own type."""
    if limit.hi is not None:
        return limit.hi + (1 if kind is Kind.INT else 0.5)
    return limit.lo if limit.lo_open else limit.lo - 1


def test_every_row_names_a_sampling_params_attribute_whose_default_it_accepts():
    assert len({f.name for f in REQUEST_FIELDS}) == len(REQUEST_FIELDS)
    for f in REQUEST_FIELDS:
        assert f.name in ATTRIBUTES, f.name
        if f.limit is not None and f.kind in (Kind.INT, Kind.REAL) and ATTRIBUTES[f.name].default is not None:
            default = ATTRIBUTES[f.name].default
            assert default > f.limit.lo or (default == f.limit.lo and not f.limit.lo_open), f.name
            assert f.limit.hi is None or default <= f.limit.hi, f.name


@pytest.mark.parametrize("f", [f for f in REQUEST_FIELDS if f.kind in (Kind.INT, Kind.REAL)], ids=lambda f: f.name)
def test_numbers_outside_their_limit_are_refused_by_the_python_api_and_every_body(f):
    bad = outside(f.limit, f.kind)
    with pytest.raises(ParameterError) as e:
        SamplingParams(**{f.name: bad})
    assert e.value.param == f.name
    for endpoint in f.endpoints:
        model, base = MODELS[endpoint]
        with pytest.raises(ValidationError) as v:
            model.model_validate({**base, f.name: bad})
        assert v.value.errors()[0]["loc"][0] == f.name


def test_each_endpoint_takes_exactly_its_declared_fields():
    for endpoint, (model, _) in MODELS.items():
        declared = {f.name for f in REQUEST_FIELDS if endpoint in f.endpoints}
        assert declared <= set(model.model_fields), endpoint
        assert all(FIELDS[endpoint][name].policy is Policy.SUPPORTED for name in declared)
        others = {f.name for f in REQUEST_FIELDS} - declared
        assert not others & set(FIELDS[endpoint]) - {"logprobs", "top_logprobs"}, endpoint  # mapped apart there


def test_the_responses_fields_travel_as_a_chat_body():
    assert set(SAMPLING) == {f.name for f in REQUEST_FIELDS if "responses" in f.endpoints}
    assert all("chat" in f.endpoints for f in REQUEST_FIELDS if "responses" in f.endpoints)


def test_policy_notes_take_their_numbers_from_the_declaration():
    chat = FIELDS["chat"]
    assert chat["temperature"].note == "0..2, default 1; 0 is greedy"
    assert chat["top_p"].note.startswith("(0, 1]")
    assert chat["max_tokens"].note == "left out: min(1024, the context left after the prompt)"
    assert chat["stop"].note.startswith("a string or up to 4 strings")
    assert chat["top_k"].note.startswith("extension: ")
    assert str(LIMITS["top_logprobs"]) in FIELDS["responses"]["top_logprobs"].note


def test_flags_are_the_rows_that_ask_for_one():
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    flags = {a.dest: a for a in p._actions if a.dest != "help"}
    assert set(flags) == {f.name for f in REQUEST_FIELDS if f.flag}
    args = p.parse_args(["--top-p", "0.5", "--seed", "3", "--stop", "a", "--stop", "b", "--ignore-eos"])
    assert request_body(args) == {"temperature": 0.0, "top_p": 0.5, "seed": 3, "stop": ["a", "b"], "ignore_eos": True}
    with pytest.raises(SystemExit):  # an int field's flag takes an integer
        p.parse_args(["--top-k", "1.5"])
