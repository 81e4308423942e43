"""What happens to every field of an OpenAI request body: one row per field and endpoint.

A field is supported (it changes what is generated or how the reply looks), unsupported (a 400
`unsupported_parameter` naming it, never silently dropped), or a hint (accepted and ignored, as the OpenAI
API itself treats it where it does not apply). A field no row names is refused like the OpenAI API refuses
it ("Unrecognized request argument supplied", code `unknown_parameter`); unknown keys inside a message are
ignored, as the OpenAI API ignores them. A `null` value is the same as leaving the field out.
To support a field, flip its row to `supported(...)` and map it in `openai_request.parse_request`.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from llm_runtime.errors import ParameterError


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


_SAMPLING = {
    "model": supported("the served model's name; another name is 404 model_not_found"),
    "max_tokens": supported("left out: min(1024, the context left after the prompt)"),
    "temperature": supported("0..2, default 1.0; 0 is greedy"),
    "top_p": supported("(0, 1]"),
    "n": supported("choices per prompt, 1..16"),
    "stop": supported("a string or up to 4 strings"),
    "seed": supported("choice i of n uses seed + i"),
    "presence_penalty": supported("-2..2, over generated tokens"),
    "frequency_penalty": supported("-2..2, over generated tokens"),
    "logit_bias": supported("token id -> -100..100, up to 300 entries"),
    "stream": supported("server-sent events ending in [DONE]"),
    "stream_options": supported("include_usage; include_obfuscation is a hint"),
    "user": hint("an end-user id for abuse monitoring; nothing is monitored here"),
    # extensions, named as vLLM names them
    "top_k": supported("extension: 0 is off"),
    "min_p": supported("extension: 0..1, 0 is off"),
    "repetition_penalty": supported("extension: 0.01..10, 1 is off (transformers' rule, prompt and output)"),
    "min_tokens": supported("extension: stop tokens are suppressed until this many are generated"),
    "ignore_eos": supported("extension: generate max_tokens tokens whatever the model says"),
    "stop_token_ids": supported("extension: token ids that end a choice, like EOS"),
    "response_format": supported("text, json_object, json_schema (enforced, strict or not); completions: extension"),
    "regex": supported("extension: a regular expression the whole reply matches"),
    "grammar": supported("extension: a Lark grammar (llguidance's dialect) the reply matches"),
}

FIELDS: dict[str, dict[str, FieldRule]] = {
    "chat": {
        **_SAMPLING,
        "messages": supported("system, developer, user, assistant (content, tool_calls), tool; text parts"),
        "max_completion_tokens": supported("as max_tokens; both given must agree"),
        "logprobs": supported("true: the chosen tokens' logprobs"),
        "top_logprobs": supported("0..20 alternatives per token; needs logprobs"),
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
        "prediction": hint("predicted outputs only make OpenAI's generation faster, never different"),
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
        **_SAMPLING,
        "prompt": supported("a string, a list of strings, token ids, or a list of token-id lists"),
        "logprobs": supported("0..20: the chosen tokens' logprobs and this many alternatives"),
        "echo": supported("the prompt's text before the completion; with logprobs: 400 unsupported_value"),
        "best_of": supported("only best_of == n (or left out); more is 400 unsupported_value"),
        "suffix": unsupported("no insertion (fill-in-the-middle) template"),
    },
    "responses": {
        "model": _SAMPLING["model"],
        "input": supported("a string, or message items (text parts), function_call and function_call_output items"),
        "instructions": supported("a system message before the input; not carried on by previous_response_id"),
        "previous_response_id": supported("continue a stored response of the same API key"),
        "store": supported("default true: kept for GET, DELETE and previous_response_id"),
        "metadata": supported("up to 16 string pairs, stored and returned"),
        "max_output_tokens": supported("as max_tokens"),
        "temperature": _SAMPLING["temperature"],
        "top_p": _SAMPLING["top_p"],
        "top_logprobs": supported("0..20 alternatives per token, with include: message.output_text.logprobs"),
        "include": supported("message.output_text.logprobs; the others name outputs no response here has"),
        "stream": supported("typed server-sent events, response.created to response.completed"),
        **{k: _SAMPLING[k] for k in ("seed", "stop", "top_k", "min_p", "repetition_penalty", "min_tokens",
                                     "ignore_eos", "stop_token_ids")},
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
