"""The Responses API's `input` (a string or a list of items) and `instructions` -> OpenAI chat messages, and a
response's output items back into the assistant turn of a stored conversation.

Items: messages (`{"role", "content"}`, with or without `"type": "message"`; content a string or a list of
`input_text` / `output_text` / `refusal` parts), `function_call` (an assistant tool call) and
`function_call_output` (its result, a tool message). Images, files, item references and reasoning items are
refused by name: only text is read here (images, audio and files: "this model is text-only").
"""
from __future__ import annotations

import json
from typing import Any

from llm_runtime.chat.messages import MEDIA_PARTS, text_only
from llm_runtime.errors import ParameterError

from .response_events import new_id

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


def _error(where: str, message: str) -> ParameterError:
    return ParameterError("input", f"{where}: {message}")


def input_messages(value: Any) -> list[dict]:
    """`input` -> chat messages (content strings, tool calls as chat `tool_calls`)."""
    return _converted(value)[0]


def input_origins(value: Any) -> tuple[str, ...]:
    """The input item each of `input_messages(value)` starts at ("input[i]"), so errors about a message name
    the item the client sent."""
    return tuple(_converted(value)[1])


def _converted(value: Any) -> tuple[list[dict], list[str]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}], ["input"]
    if not isinstance(value, list) or not value:
        raise ParameterError("input", "input must be a string or a non-empty list of items")
    out: list[dict] = []
    origins: list[str] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _error(where, f"must be an object, got {type(item).__name__}")
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, where))
        elif kind == "function_call":
            _add_call(out, _function_call(item, where))
        elif kind == "function_call_output":
            out.append(_call_output(item, where))
        elif kind in MEDIA_PARTS:
            raise _error(where, text_only(kind))
        else:
            raise _error(where, f"items of type {kind!r} are not supported (message, function_call, "
                                f"function_call_output)")
        origins += [where] * (len(out) - len(origins))
    return out, origins


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise _error(where, f"{key} must be a string")
    return value


def _message(item: dict, where: str) -> dict:
    role = item.get("role")
    if role not in ROLES:
        raise _error(where, f"role must be one of {', '.join(ROLES)}, got {role!r}")
    content = item.get("content")
    if isinstance(content, list):
        content = "\n".join(_part(p, f"{where}.content[{j}]") for j, p in enumerate(content))
    return {"role": role, "content": _text(content, where, "content")}


def _part(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    key = TEXT_PARTS.get(kind)
    if kind in MEDIA_PARTS:
        raise _error(where, text_only(kind))
    if key is None:
        raise _error(where, f"only text parts (input_text, output_text) are supported, got {kind!r}")
    return _text(part.get(key), where, key)


def _function_call(item: dict, where: str) -> dict:
    arguments = _text(item.get("arguments", "{}"), where, "arguments")
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise _error(where, "arguments must be a JSON object (as text)")
    return {"id": _text(item.get("call_id"), where, "call_id"), "type": "function",
            "function": {"name": _text(item.get("name"), where, "name"), "arguments": arguments}}


def _add_call(out: list[dict], call: dict) -> None:
    """Consecutive calls (and calls right after the assistant's text) are one assistant turn."""
    if out and out[-1]["role"] == "assistant":
        out[-1].setdefault("tool_calls", []).append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _call_output(item: dict, where: str) -> dict:
    output = item.get("output")
    if isinstance(output, list):
        output = "\n".join(_part(p, f"{where}.output[{j}]") for j, p in enumerate(output))
    return {"role": "tool", "tool_call_id": _text(item.get("call_id"), where, "call_id"),
            "content": _text(output, where, "output")}


def input_items(value: Any) -> list[dict]:
    """`input` (checked by `input_messages` first) as the items GET /v1/responses/{id}/input_items lists: each an
    object with `type`, an `id` (the client's, or a new one) and `status`, message content as parts."""
    return [_listed(item) for item in ([{"role": "user", "content": value}] if isinstance(value, str) else value)]


def _listed(item: dict) -> dict:
    kind = item.get("type", "message")
    if kind != "message":
        return {**item, "id": item.get("id") or new_id({"function_call": "fc"}.get(kind, "fco")),
                "status": item.get("status") or "completed"}
    assistant = item["role"] == "assistant"
    content = item["content"]
    if isinstance(content, str):
        content = [{"type": "output_text" if assistant else "input_text", "text": content}]
    parts = [{**p, "annotations": p.get("annotations", [])} if p["type"] == "output_text" else p for p in content]
    return {"id": item.get("id") or new_id("msg"), "type": "message", "role": item["role"], "content": parts,
            "status": item.get("status") or "completed"}


def output_messages(output: list[dict]) -> list[dict]:
    """A response's output items -> its assistant turn in the conversation: message text parts joined, function
    calls as the turn's tool calls (an assistant message's text before them is the same turn's content). A call cut
    off by max_output_tokens is left out: its arguments are not JSON, and no client could have run it."""
    out: list[dict] = []
    for item in output:
        if item["type"] == "function_call":
            if item["status"] != "incomplete":
                _add_call(out, _function_call(item, "output"))
        else:
            out.append({"role": "assistant", "content": "".join(
                part["text"] for part in item["content"] if part["type"] == "output_text")})
    return out
