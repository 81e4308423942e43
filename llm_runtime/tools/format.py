"""How a model writes tool calls: one row per native format, picked from the chat template's text, and the
grammar that enforces a call when `tool_choice` is "required" or names a function, and with "auto" holds the
calls a reply makes to their schemas.

    hermes   (Qwen2.5, Qwen3, Hermes)  <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, one block per call
    llama3   (Llama 3.1-3.3, JSON)     {"name": ..., "parameters": {...}} as the whole reply
    mistral  (Mistral v0.3+)           [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
    generic  (templates without tools) {"tool_calls": [{"name": ..., "arguments": {...}}, ...]} or {"content": "..."},
                                       described in a system section and always enforced by the constraint

Whenever the grammar enforces calls, each call's arguments follow the tool's bounded schema
(`Tool.arguments_schema`: no undeclared keys, strings and arrays bounded) and a reply holds at most
MAX_CALLS calls: a small model that repeats one call stops there instead of running to max_tokens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from tokenizers import Tokenizer

from llm_runtime.structured.constraint import JSON_OPTIONS, Constraint

from .tool import Tool

MAX_CALLS = 8  # calls in one reply, when the grammar enforces them and parallel calls are allowed


@dataclass(frozen=True)
class ToolFormat:
    name: str
    start: str = ""  # the marker that opens calls anywhere in the reply
    end: str = ""  # the marker that closes each call
    args_key: str = "arguments"
    json_at_start: bool = False  # a reply that begins with "{" is calls
    envelope: bool = False  # the generic format: the whole reply is one JSON object
    call_separator: str = ""  # between bare call objects after one start (llama3: ";")
    id_chars: int = 0  # call ids the template accepts: 0 for any, else exactly this many letters and digits
    parallel: bool = True  # several calls in one reply
    native: bool = True  # the template renders tools itself

    def call_schema(self, tools: tuple[Tool, ...]) -> dict:
        """One call object: {"name": <a tool's name>, <args_key>: <its arguments>}, in that order."""
        options = [{"type": "object", "properties": {"name": {"const": t.name}, self.args_key: t.arguments_schema()},
                    "required": ["name", self.args_key], "additionalProperties": False} for t in tools]
        return options[0] if len(options) == 1 else {"anyOf": options}

    def constraint(self, tools: tuple[Tool, ...], choice: str, parallel: bool, tokenizer: Tokenizer) -> Constraint | None:
        """The grammar a reply must follow for `choice` ("auto", "required" or a tool's name), or None when the
        model chooses freely: "none", and "auto" where a call cannot be told from text (Llama 3's JSON reply, or a
        marker the tokenizer splits). With "auto" the model may answer in text or call; the calls it makes are
        held to their schemas like required ones."""
        if choice == "none" or not tools:
            return None
        if choice not in ("auto", "required"):
            tools = tuple(t for t in tools if t.name == choice)
        if choice != "required":
            parallel = parallel and choice == "auto"
        parallel = parallel and self.parallel
        if self.envelope:
            return Constraint.json_schema(self.envelope_schema(tools, choice == "auto", parallel), "tools")
        marker = tokenizer.token_to_id(self.start)
        if choice == "auto" and (self.json_at_start or marker is None):
            return None  # a call that is JSON from the start, or a marker of several tokens, cannot be told from text
        call = _json_rule(self.call_schema(tools))
        rules = ""
        if self.json_at_start:  # llama3: the reply is the call
            calls = call
        elif self.end:  # hermes: a block per call
            block = f'{_literal(self.start, tokenizer)} "\\n" {call} "\\n" {_literal(self.end, tokenizer)}'
            calls = "block" + (f' ("\\n" block){{0,{MAX_CALLS - 1}}}' if parallel else "")
            rules = f"block: {block}\n"
        else:  # mistral: a list after the marker
            items = {"type": "array", "items": self.call_schema(tools), "minItems": 1, "maxItems": _most(parallel)}
            calls = f'{_literal(self.start, tokenizer)} " "? {_json_rule(items)}'
        if choice == "auto":  # any text without the marker, then calls or nothing: the calls it makes are held
            return Constraint("grammar", f"start: text ({calls})?\ntext: <[^{marker}]>*\n{rules}", "tools")
        return Constraint("grammar", f"start: {calls}\n{rules}", "tools")

    def envelope_schema(self, tools: tuple[Tool, ...], may_answer: bool, parallel: bool) -> dict:
        """The generic reply: tool calls, or (when the model may answer) a plain answer."""
        calls = {"type": "array", "items": self.call_schema(tools), "minItems": 1, "maxItems": _most(parallel)}
        call_reply = {"type": "object", "properties": {"tool_calls": calls}, "required": ["tool_calls"],
                      "additionalProperties": False}
        if not may_answer:
            return call_reply
        answer = {"type": "object", "properties": {"content": {"type": "string"}}, "required": ["content"],
                  "additionalProperties": False}
        return {"anyOf": [call_reply, answer]}


HERMES = ToolFormat("hermes", start="<tool_call>", end="</tool_call>")
LLAMA3 = ToolFormat("llama3", start="<|python_tag|>", args_key="parameters", json_at_start=True, call_separator=";",
                    parallel=False)
MISTRAL = ToolFormat("mistral", start="[TOOL_CALLS]", id_chars=9)
GENERIC = ToolFormat("generic", json_at_start=True, envelope=True, native=False)
FORMATS = {f.name: f for f in (HERMES, LLAMA3, MISTRAL, GENERIC)}


def detect_format(template_source: str | None) -> ToolFormat:
    """The native format a chat template renders tool calls in; GENERIC when it has no tool support."""
    source = template_source or ""
    if "tools" not in source:
        return GENERIC
    if "<tool_call>" in source:
        return HERMES
    if "[TOOL_CALLS]" in source:
        return MISTRAL
    if "<|start_header_id|>" in source and ("parameters" in source or "<|python_tag|>" in source):
        return LLAMA3
    return GENERIC


def _most(parallel: bool) -> int:
    return MAX_CALLS if parallel else 1


def _json_rule(schema: dict) -> str:
    """An llguidance Lark `%json` rule, with the compact separators (the schema's own options win)."""
    return "%json " + json.dumps({**schema, "x-guidance": {**JSON_OPTIONS, **schema.get("x-guidance", {})}})


def _literal(marker: str, tokenizer: Tokenizer) -> str:
    """A marker as the single token the model emits for it (`<[id]>`), else as text."""
    token = tokenizer.token_to_id(marker)
    return f"<[{token}]>" if token is not None else json.dumps(marker)
