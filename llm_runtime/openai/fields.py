"""What happens to every field of an OpenAI request body: one row per field and endpoint.

A field is supported (it changes what is generated or how the reply looks), unsupported (a 400
`unsupported_parameter` naming it, never silently dropped), or a hint (accepted and ignored, as the OpenAI
API itself treats it where it does not apply). A field no row names is refused like the OpenAI API refuses
it ("Unrecognized request argument supplied", code `unknown_parameter`); unknown keys inside a message are
ignored, as the OpenAI API ignores them. A `null` value is the same as leaving the field out.
The sampling fields' rows come from their declaration (llm_runtime.sampling.fields), notes included; to add
one, declare it there. To support another field, flip its row to `supported(...)` and map it in
`llm_runtime.openai.request.parse_request`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from llm_runtime.errors import ParameterError
from llm_runtime.sampling.fields import LIMITS, REQUEST_FIELDS, RequestField
from llm_runtime.sampling.params import DEFAULT_MAX_TOKENS, SamplingParams


class Policy(Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    HINT = "hint"


@dataclass(frozen=True)
class FieldRule:
    policy: Policy
    note: str
    neutral: tuple = ()  # values of an unsupported field that ask for nothing beyond the default, so they run


def supported(note: str) -> FieldRule:
    return FieldRule(Policy.SUPPORTED, note)


def unsupported(note: str, neutral: tuple = ()) -> FieldRule:
    return FieldRule(Policy.UNSUPPORTED, note, neutral)


def hint(note: str) -> FieldRule:
    return FieldRule(Policy.HINT, note)


def describe(f: RequestField) -> str:
    """f's note, its numbers filled in from the declaration and SamplingParams' default."""
    default = SamplingParams.__dataclass_fields__[f.name].default
    return f.note.format(range=f.limit, default=f"{default:g}" if isinstance(default, float) else default,
                         items=f.items, DEFAULT_MAX_TOKENS=DEFAULT_MAX_TOKENS)


def _declared(endpoint: str) -> dict[str, FieldRule]:
    return {f.name: supported(("extension: " if f.extension else "") + describe(f))
            for f in REQUEST_FIELDS if endpoint in f.endpoints}


_PROTOCOL = {
    "model": supported("the served model's name; another name is 404 model_not_found"),
    "stream": supported("server-sent events ending in [DONE]"),
    "stream_options": supported("include_usage; include_obfuscation is a hint"),
    "user": hint("an end-user id for abuse monitoring; nothing is monitored here"),
    "response_format": supported("text, json_object, json_schema (enforced, strict or not); completions: extension"),
}

FIELDS: dict[str, dict[str, FieldRule]] = {
    "chat": {
        **_declared("chat"),
        **_PROTOCOL,
        "messages": supported("system, developer, user, assistant (content, tool_calls), tool; text parts"),
        "max_completion_tokens": supported("as max_tokens; both given must agree"),
        "tools": supported("function tools; calls in the model's own format, or a generic JSON one"),
        "tool_choice": supported("none, auto, required or a named function; required and named are enforced"),
        "parallel_tool_calls": supported("false: at most one call"),
        "functions": unsupported("the legacy functions API: give tools instead", neutral=([],)),
        "function_call": unsupported("the legacy functions API: give tool_choice instead", neutral=("none",)),
        "modalities": unsupported("only text is generated", neutral=(["text"],)),
        "audio": unsupported("only text is generated"),
        "web_search_options": unsupported("there is no web search"),
        "reasoning_effort": unsupported("the model is not a reasoning model"),
        "verbosity": unsupported("the model has no verbosity setting"),
        "store": hint("nothing is stored for OpenAI's distillation or evals"),
        "metadata": hint("tags for stored completions; nothing is stored"),
        "service_tier": hint("there is one tier"),
        "prompt_cache_key": hint("prompt prefixes are reused automatically"),
        "prompt_cache_retention": hint("prompt prefixes are reused while the engine holds them"),
        "prompt_cache_options": hint("prompt prefixes are reused automatically"),
        "safety_identifier": hint("an end-user id for abuse monitoring; nothing is monitored here"),
        "moderation": unsupported("no moderation runs here"),
    },
    "completions": {
        **_declared("completions"),
        **_PROTOCOL,
        "prompt": supported("a string, a list of strings, token ids, or a list of token-id lists"),
        "logprobs": supported(f"{LIMITS['top_logprobs']}: the chosen tokens' logprobs and this many alternatives"),
        "echo": supported("the prompt's text before the completion; with logprobs: 400 unsupported_value"),
        "best_of": supported("only best_of == n (or left out); more is 400 unsupported_value"),
        "suffix": unsupported("no insertion (fill-in-the-middle) template"),
    },
    "responses": {
        **_declared("responses"),
        "model": _PROTOCOL["model"],
        "input": supported("a string, or message items (text parts), function_call and function_call_output items"),
        "instructions": supported("a system message before the input; not carried on by previous_response_id"),
        "previous_response_id": supported("continue a stored response of the same API key"),
        "store": supported("default true: kept for GET, DELETE and previous_response_id"),
        "metadata": supported("up to 16 string pairs, stored and returned"),
        "max_output_tokens": supported("as max_tokens"),
        "top_logprobs": supported(f"{LIMITS['top_logprobs']} alternatives per token, with include: "
                                  f"message.output_text.logprobs"),
        "include": supported("message.output_text.logprobs; the others name outputs no response here has"),
        "stream": supported("typed server-sent events, response.created to response.completed"),
        "text": supported("format: text, json_object or json_schema (enforced, strict or not); no verbosity"),
        "tools": supported("function tools (flat); calls in the model's own format, or a generic JSON one"),
        "tool_choice": supported("none, auto, required or {type: function, name}; required and named are enforced"),
        "parallel_tool_calls": supported("false: at most one call"),
        "max_tool_calls": hint("a limit on built-in tools' calls; there are none here"),
        "reasoning": unsupported("the model is not a reasoning model", neutral=({},)),
        "truncation": unsupported("the conversation is never truncated", neutral=("disabled",)),
        "background": unsupported("responses run in the foreground", neutral=(False,)),
        "conversation": unsupported("no Conversations API; continue with previous_response_id"),
        "prompt": unsupported("no stored prompt templates"),
        "context_management": unsupported("the context is never compacted"),
        "moderation": unsupported("no moderation runs here"),
        "stream_options": hint("include_obfuscation: events are never padded"),
        **{k: hint(note) for k, note in (
            ("user", "an end-user id for abuse monitoring; nothing is monitored here"),
            ("safety_identifier", "an end-user id for abuse monitoring; nothing is monitored here"),
            ("service_tier", "there is one tier"), ("prompt_cache_key", "prompt prefixes are reused automatically"),
            ("prompt_cache_retention", "prompt prefixes are reused while the engine holds them"),
            ("prompt_cache_options", "prompt prefixes are reused automatically"))},
    },
}


def check_fields(body: dict, endpoint: str) -> dict:
    """The body's non-null fields after the policy: unknown or unsupported ones raise `ParameterError`
    (400, naming the field); hints are dropped."""
    rules = FIELDS[endpoint]
    out = {}
    for name, value in body.items():
        if value is None:
            continue
        rule = rules.get(name)
        if rule is None:
            raise ParameterError(name, f"Unrecognized request argument supplied: {name}", "unknown_parameter")
        if rule.policy is Policy.UNSUPPORTED and value not in rule.neutral:
            raise ParameterError(name, f"Unsupported parameter: '{name}' is not supported by this server "
                                       f"({rule.note})", "unsupported_parameter")
        if rule.policy is Policy.SUPPORTED:
            out[name] = value
    return out
