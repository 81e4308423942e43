"""Every Responses object and event the server emits, against the published schema: the official `openai`
package's types (`Response`, the `ResponseStreamEvent` union) validated strictly, and a walk over each type's
`model_fields` that finds a required field missing or null where the type allows no null (pydantic alone lets
some through), plus the fields OpenAI's API reference gives every response object that the client's types do
not insist on. Over a matrix of requests on a real server on loopback (a tiny random Qwen2 speaking Hermes tool
calls): plain, echoed request fields, streamed, function tools, previous_response_id, store false, incomplete;
created, streamed and retrieved. And the routes under /v1/responses: unknown ones 404, `Allow` right."""
from __future__ import annotations

import types
import typing

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter, ValidationError
from server_process import serving
from test_tool_request import ASK, TOOLS, tool_model_folder

KEY = "responses-schema-key"
FLAT = [{"type": "function", **t["function"]} for t in TOOLS]
RESPONSE, EVENT = TypeAdapter(Response), TypeAdapter(ResponseStreamEvent)
# OpenAI's API reference: what every response object carries, beyond the client's required fields (name ->
# the JSON types allowed; None: null)
PUBLISHED = {"id": (str,), "object": (str,), "created_at": (int, float), "error": (dict, None),
             "incomplete_details": (dict, None), "instructions": (str, list, None), "model": (str,),
             "tools": (list,), "output": (list,), "parallel_tool_calls": (bool,), "metadata": (dict,),
             "tool_choice": (str, dict), "temperature": (int, float), "top_p": (int, float), "top_logprobs": (int,),
             "presence_penalty": (int, float), "frequency_penalty": (int, float), "safety_identifier": (str, None),
             "prompt_cache_key": (str, None), "user": (str, None), "truncation": (str,), "service_tier": (str,),
             "store": (bool,), "text": (dict,), "usage": (dict, None), "status": (str,)}


def _branch(value, options: list):
    """The member of a union that `value` is: by its `type` tag where the members have one, else the first
    that validates."""
    for option in options:
        if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(value, dict):
            tag = option.model_fields.get("type")
            if tag is not None and typing.get_origin(tag.annotation) is typing.Literal:
                if value.get("type") in typing.get_args(tag.annotation):
                    return option
                continue
        try:
            TypeAdapter(option).validate_python(value, strict=True)
            return option
        except ValidationError:
            continue
    return None


def gaps(value, annotation, where: str = "$") -> list[str]:
    """Where `value` lacks a field that `annotation` requires (no default), or is null where it allows none."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        return []
    if origin is typing.Annotated:
        return gaps(value, args[0], where)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return [] if type(None) in args else [f"{where}: null"]
        branch = _branch(value, [a for a in args if a is not type(None)])
        return [] if branch is None else gaps(value, branch, where)  # no branch: strict validation says why
    if value is None:
        return [f"{where}: null"]
    if origin is list and isinstance(value, list):
        return [g for i, v in enumerate(value) for g in gaps(v, args[0], f"{where}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [g for k, v in value.items() for g in gaps(v, args[1], f"{where}.{k}")]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        out = []
        for name, f in annotation.model_fields.items():
            key = f.alias or name
            if key not in value:
                out += [f"{where}.{key}: missing"] if f.is_required() else []
            else:
                out += gaps(value[key], f.annotation, f"{where}.{key}")
        return out
    return []


def published_gaps(response: dict, where: str) -> list[str]:
    out = []
    for key, kinds in PUBLISHED.items():
        if key not in response:
            out.append(f"{where}.{key}: missing")
        elif not any(response[key] is None if k is None else isinstance(response[key], k) and not (
                k is int and isinstance(response[key], bool)) for k in kinds):
            names = " or ".join(getattr(k, "__name__", "null") for k in kinds)
            out.append(f"{where}.{key}: {response[key]!r} is not {names}")
    return out


def check_response(response: dict, where: str = "response") -> None:
    RESPONSE.validate_python(response, strict=True)
    assert gaps(response, Response, where) + published_gaps(response, where) == []


def check_event(event: dict) -> None:
    EVENT.validate_python(event, strict=True)
    kind = _branch(event, list(typing.get_args(typing.get_args(ResponseStreamEvent)[0])))
    assert kind is not None, event["type"]
    assert gaps(event, kind, event["type"]) == []
    if "response" in event:
        check_response(event["response"], f"{event['type']}.response")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tool_model_folder(tmp_path_factory.mktemp("responses-schema"), "hermes"), "--api-key", KEY,
                 "--served-model-name", "tiny") as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0)


ECHOED = dict(prompt_cache_key="conversation-7", safety_identifier="user-hash-1", user="user-1",
              metadata={"k": "v"}, top_logprobs=2, include=["message.output_text.logprobs"], service_tier="auto",
              truncation="disabled", extra_body={"presence_penalty": 0.5, "frequency_penalty": -0.5})
YES_NO = {"format": {"type": "json_schema", "name": "answer", "strict": True, "schema": {
    "type": "object", "properties": {"yes": {"type": "boolean"}}, "required": ["yes"], "additionalProperties": False}}}
CASES = {  # name -> (the request, the status it ends in)
    "plain": (dict(input="Hi", temperature=0, max_output_tokens=40, text=YES_NO), "completed"),
    "echoed": (dict(input="Hi", temperature=0, max_output_tokens=40, text=YES_NO, **ECHOED), "completed"),
    "tools": (dict(input=ASK, tools=FLAT, tool_choice="required", parallel_tool_calls=False, temperature=1.0,
                   max_output_tokens=120, extra_body={"seed": 3}), "completed"),
    "store false": (dict(input="Hi", temperature=0, max_output_tokens=40, text=YES_NO, store=False), "completed"),
    "incomplete": (dict(input="Hi", temperature=0, max_output_tokens=3, extra_body={"ignore_eos": True}),
                   "incomplete"),
}


@pytest.mark.parametrize("case", CASES)
def test_created_streamed_and_retrieved_objects_match_the_schema(client, case):
    args, status = CASES[case]
    args = dict(model="tiny", **args)
    r = client.responses.create(**args).to_dict()
    check_response(r)
    events = [e.to_dict() for e in client.responses.create(**args, stream=True)]
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    for e in events:
        check_event(e)
    final = events[-1]["response"]
    assert final["status"] == r["status"] == status
    if args.get("store", True):
        check_response(client.responses.retrieve(r["id"]).to_dict())
        check_response(client.responses.retrieve(final["id"]).to_dict())
    else:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(r["id"])


def test_a_continued_response_matches_the_schema(client):
    first = client.responses.create(model="tiny", input="Hi", temperature=0, max_output_tokens=6)
    args = dict(model="tiny", input="And then?", previous_response_id=first.id, temperature=0, max_output_tokens=6)
    second = client.responses.create(**args).to_dict()
    check_response(second)
    assert second["previous_response_id"] == first.id
    for e in client.responses.create(**args, stream=True):
        check_event(e.to_dict())
    check_response(client.responses.retrieve(second["id"]).to_dict())


def test_request_fields_are_echoed_as_openai_echoes_them(client):
    r = client.responses.create(model="tiny", input="Hi", temperature=0, max_output_tokens=4, **ECHOED)
    echoed = {k: getattr(r, k) for k in ("prompt_cache_key", "safety_identifier", "user", "metadata",
                                         "top_logprobs", "truncation")}
    assert echoed == {k: ECHOED[k] for k in echoed}
    assert r.to_dict()["presence_penalty"] == 0.5 and r.to_dict()["frequency_penalty"] == -0.5
    assert r.service_tier == "default"  # the tier that served it: there is one
    plain = client.responses.create(model="tiny", input="Hi", max_output_tokens=4).to_dict()
    assert {k: plain[k] for k in ("prompt_cache_key", "safety_identifier", "user", "top_logprobs", "presence_penalty",
                                  "frequency_penalty", "temperature", "top_p")} == {
        "prompt_cache_key": None, "safety_identifier": None, "user": None, "top_logprobs": 0,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "temperature": 1.0, "top_p": 1.0}


def test_penalties_change_what_is_sampled(client):
    """presence/frequency penalties reach the sampler on /v1/responses, as on chat: at temperature 0 a strong
    frequency penalty moves the tiny model off the tokens it repeats."""
    args = dict(model="tiny", input="Hi", temperature=0, max_output_tokens=24)
    plain = client.responses.create(**args, extra_body={"ignore_eos": True}).output_text
    penalized = client.responses.create(**args, extra_body={"ignore_eos": True, "frequency_penalty": 2.0,
                                                            "presence_penalty": 2.0}).output_text
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], temperature=0,
                                          max_tokens=24, frequency_penalty=2.0, presence_penalty=2.0,
                                          extra_body={"ignore_eos": True}).choices[0].message.content
    assert penalized == chat != plain


def test_unknown_routes_are_404_and_allow_names_the_methods(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    for path in ("/v1/responses/compact", "/v1/responses/input_tokens"):
        r = httpx.post(server + path, headers=auth, json={"model": "tiny", "input": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    r = httpx.post(server + "/v1/responses/resp_123", headers=auth, json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE"
    r = httpx.put(server + "/v1/responses/resp_123", headers=auth, json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE"
    r = httpx.get(server + "/v1/responses", headers=auth)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = httpx.delete(server + "/v1/responses/resp_missing", headers=auth)
    assert r.status_code == 404
    r = httpx.post(server + "/v1/responses/resp_123/input_items", headers=auth, json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET"
