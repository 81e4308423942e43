"""OpenAI-style chat messages -> the plain dicts a Hugging Face chat template reads, checked once for every door.

Accepted: roles system, developer (rendered as system), user, assistant and tool; content as a string or a list
of text parts (refusal parts of an assistant turn count as text); an assistant turn with `content: null` and
`tool_calls` (each call's `function.arguments` JSON string parsed into a dict, as templates print it with
`tojson`); `tool_call_id` on tool messages; `name` on any message; the legacy `function_call` of an assistant
turn (one tool call) and `function` messages (a tool result named by `name`). Other keys are ignored, as OpenAI
ignores them. Image, audio and file parts are refused in one line naming the part: the models are text-only.
"""
from __future__ import annotations

import json
from typing import Any

from llm_runtime.errors import ParameterError

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TEXT_PART_SEPARATOR = "\n"  # text parts of one message are joined like vLLM does
# content parts of OpenAI's chat and Responses APIs that carry images, audio or files
MEDIA_PARTS = ("image_url", "input_audio", "file", "input_image", "input_file")
_KEPT = ("role", "content", "name", "tool_calls", "tool_call_id", "function_call")


def _error(where: str, message: str) -> ParameterError:
    return ParameterError("messages", f"{where}: {message}")


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Check chat messages and return template-ready copies (see the module's docstring)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ParameterError("messages", "messages must be a non-empty list of {'role', 'content'} objects")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]


def _message(message: Any, where: str) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise _error(where, f"must be an object, got {type(message).__name__}")
    role = message.get("role")
    if role not in ROLES:
        raise _error(where, f"role must be one of {', '.join(ROLES)}, got {role!r}")
    out = {k: message[k] for k in _KEPT if message.get(k) is not None}
    out["role"] = {"developer": "system", "function": "tool"}.get(role, role)
    if "function_call" in out:  # legacy: one call, as a tool call
        out["tool_calls"] = [*out.get("tool_calls", []), {"id": "", "function": out.pop("function_call")}]
    if "name" in out and not isinstance(out["name"], str):
        raise _error(where, "name must be a string")
    content = out.get("content")
    if content is None:
        if role != "assistant" or not out.get("tool_calls"):  # only an assistant's tool-call turn may be empty
            raise _error(where, "content is missing")
    elif isinstance(content, (list, tuple)):
        out["content"] = TEXT_PART_SEPARATOR.join(_part_text(p, f"{where}.content[{j}]") for j, p in enumerate(content))
    elif not isinstance(content, str):
        raise _error(where, "content must be a string or a list of text parts")
    if "tool_calls" in out:
        if role != "assistant":
            raise _error(where, "only assistant messages may carry tool_calls")
        out["tool_calls"] = _tool_calls(out["tool_calls"], f"{where}.tool_calls")
    if out["role"] == "tool" and not isinstance(out.get("tool_call_id") or out.get("name"), str):
        raise _error(where, "a tool message needs tool_call_id (a string)")
    return out


def text_only(kind: str) -> str:
    """The one line that refuses a content part the model cannot take."""
    return f"this model is text-only; {kind!r} parts are not supported"


def _part_text(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    if kind in MEDIA_PARTS:
        raise _error(where, text_only(kind))
    key = {"text": "text", "refusal": "refusal"}.get(kind)
    if key is None or not isinstance(part.get(key), str):
        raise _error(where, f"only text parts ({{'type': 'text', 'text': ...}}) are supported, got {kind!r}")
    return part[key]


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, (list, tuple)) or not calls:
        raise _error(where, "must be a non-empty list")
    out = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _error(f"{where}[{j}]", "needs function.name (a string)")
        arguments = function.get("arguments", "{}")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                arguments = None
        if not isinstance(arguments, dict):
            raise ParameterError("messages", f"{where}[{j}].function.arguments must be a JSON object (as text)")
        out.append({"id": call.get("id"), "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
    return out
