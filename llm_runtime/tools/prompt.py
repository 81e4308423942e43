"""Tools and tool results in the prompt, rendered by the model's own chat template.

A template with tool support gets `tools` and the history as transformers' `apply_chat_template` expects it
(each call's `arguments` a dict, not OpenAI's JSON text). A template without it gets the generic format: a
system section that describes the tools and the JSON reply, earlier calls as that JSON, and tool results as
user turns.
"""
from __future__ import annotations

import hashlib
import json
import string
from typing import Any

from llm_runtime.chat.template import ChatTemplate, normalize_messages
from llm_runtime.errors import ParameterError

from .format import ToolFormat
from .tool import Tool

_ALNUM = string.ascii_letters + string.digits


def render_with_tools(template: ChatTemplate, messages: list[dict], tools: tuple[Tool, ...], fmt: ToolFormat,
                      choice: str = "auto", parallel: bool = True) -> str:
    """The prompt text for a conversation that may offer tools and carry earlier calls and their results."""
    offered = tools if choice != "none" else ()
    messages = normalize_messages([_legacy_result(m) for m in messages])
    if fmt.native:
        history = [_native_message(m, i, fmt) for i, m in enumerate(messages)]
        return template.render(history, add_generation_prompt=True,
                               tools=[t.openai() for t in offered] if offered else None)
    history = _generic_history(messages)
    if not offered:
        return template.render(history, add_generation_prompt=True)
    section = generic_section(offered, choice, parallel and fmt.parallel)
    if history[0]["role"] == "system":
        system = {"role": "system", "content": f"{history[0].get('content') or ''}\n\n{section}".lstrip()}
        return template.render([system, *history[1:]], add_generation_prompt=True)
    try:
        return template.render([{"role": "system", "content": section}, *history], add_generation_prompt=True)
    except ValueError:  # a template without a system role: the section opens the first turn
        first = {**history[0], "content": f"{section}\n\n{history[0].get('content') or ''}"}
        return template.render([first, *history[1:]], add_generation_prompt=True)


def generic_section(tools: tuple[Tool, ...], choice: str, parallel: bool) -> str:
    """The system text that tells a model without tool training how to call the tools."""
    listing = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.schema()},
                                   ensure_ascii=False) for t in tools)
    calls = '{"tool_calls": [{"name": <tool name>, "arguments": <arguments object>}' + (", ..." if parallel else "") + "]}"
    if choice == "auto":
        how = f"To call tools, reply {calls}. To answer directly, reply {{\"content\": <your answer>}}."
    elif choice == "required":
        how = f"Call at least one tool: reply {calls}."
    else:
        how = f'Call the tool {choice}: reply {{"tool_calls": [{{"name": "{choice}", "arguments": <arguments object>}}]}}.'
    return ("You can use these tools (name, description and the JSON schema of their arguments):\n"
            f"{listing}\nReply with one JSON object only. {how} Tool results come back as messages "
            '{"tool_result": {"name": ..., "content": ...}}.')


def _arguments(arguments: Any, where: str) -> dict:
    """OpenAI's arguments text as the dict templates expect."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ParameterError("messages", f"{where}.function.arguments must be a JSON object (as text)")
    return value


def _calls(message: dict, i: int) -> list[tuple[str, str, dict]]:
    """(id, name, arguments) of an assistant message's tool_calls (or legacy function_call)."""
    calls = message.get("tool_calls") or []
    if message.get("function_call"):
        calls = [*calls, {"id": "", "function": message["function_call"]}]
    if not isinstance(calls, list):
        raise ParameterError("messages", f"messages[{i}].tool_calls must be a list")
    out = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise ParameterError("messages", f"{where}.function must be an object with a name")
        out.append((str(call.get("id") or ""), fn["name"], _arguments(fn.get("arguments", "{}"), where)))
    return out


def _native_message(message: dict, i: int, fmt: ToolFormat) -> dict:
    message = dict(message)
    if message.get("role") == "assistant" and (message.get("tool_calls") or message.get("function_call")):
        calls = _calls(message, i)
        message.pop("function_call", None)
        message["tool_calls"] = [{"id": _template_id(cid, fmt), "type": "function",
                                  "function": {"name": name, "arguments": args}} for cid, name, args in calls]
    if message.get("role") == "tool" and "tool_call_id" in message:
        message["tool_call_id"] = _template_id(str(message["tool_call_id"]), fmt)
    return message


def _legacy_result(message: Any) -> Any:
    """A legacy `function` message (the result of a `function_call`) as a tool message."""
    if isinstance(message, dict) and message.get("role") == "function":
        return {"role": "tool", "name": message.get("name"), "content": message.get("content")}
    return message


def _template_id(call_id: str, fmt: ToolFormat) -> str:
    """A call id the template accepts: Mistral's want 9 letters and digits, so other ids map onto such one."""
    if not fmt.id_chars or (len(call_id) == fmt.id_chars and call_id.isalnum()):
        return call_id
    digest = hashlib.sha256(call_id.encode()).digest()
    return "".join(_ALNUM[b % len(_ALNUM)] for b in digest[:fmt.id_chars])


def _generic_history(messages: list[dict]) -> list[dict]:
    """Earlier calls as the generic reply JSON; tool results (consecutive ones together) as user turns."""
    out: list[dict] = []
    names: dict[str, str] = {}
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            calls = _calls(message, i)
            names.update((cid, name) for cid, name, _ in calls)
            reply = {"tool_calls": [{"name": name, "arguments": args} for _, name, args in calls]}
            out.append({"role": "assistant", "content": json.dumps(reply, ensure_ascii=False)})
        elif role == "tool":
            name = message.get("name") or names.get(str(message.get("tool_call_id")), "")
            result = json.dumps({"tool_result": {"name": name, "content": message.get("content")}}, ensure_ascii=False)
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "tool_results": True})
        else:
            out.append(message)
    return [{k: v for k, v in m.items() if k != "tool_results"} for m in out]
