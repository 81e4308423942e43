"""The one mapping from an OpenAI-style body to `SamplingParams` plus the reply options, for every door:
the server's chat and completions bodies, the batch job's lines and the CLI's flags."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields

from tokenizers import Tokenizer

from llm_runtime.chat.messages import normalize_messages
from llm_runtime.chat.template import ChatTemplate
from llm_runtime.errors import ParameterError
from llm_runtime.sampling.fields import LIMITS, REQUEST_FIELDS
from llm_runtime.sampling.params import MAX_PROMPTS, SamplingParams
from llm_runtime.tools.format import detect_format
from llm_runtime.tools.request import ToolRequest
from llm_runtime.tools.tool import Tool, parse_tool_choice, parse_tools

from .fields import check_fields
from .response_format import format_constraint

SEED_MIN = LIMITS["seed"].lo  # choice j's seed wraps around within the seed's range
ENDPOINTS = {"chat": "messages", "completions": "prompt"}  # endpoint -> the field that holds the input
# SamplingParams fields that one body field sets together: over a base, a body that sets one replaces the whole
# group (its response_format replaces the base's json_schema; its logprobs, the base's top_logprobs)
TOGETHER = (("json_schema", "regex", "grammar", "json_object", "constraint"), ("logprobs", "top_logprobs"))


@dataclass(frozen=True)
class OpenAIRequest:
    """A checked body: what to generate and how to reply."""

    chat: bool
    model: str | None
    messages: list[dict] | None  # chat: template-ready messages
    prompts: list[str | list[int]]  # completions: each prompt gets n choices (choice index = prompt * n + j)
    params: SamplingParams  # choice 0's; `choice_params(j)` gives choice j of n
    stream: bool = False
    include_usage: bool = False
    echo: bool = False  # completions: each choice's text starts with its prompt
    tools: tuple[Tool, ...] = ()  # chat: the functions offered
    tool_choice: str = "none"  # "none", "auto", "required" or a tool's name
    parallel_tool_calls: bool = True

    @property
    def n(self) -> int:
        return self.params.n

    @property
    def choices(self) -> int:
        return self.n * (1 if self.chat else len(self.prompts))

    def tool_request(self, template: ChatTemplate) -> ToolRequest | None:
        """The request's tools in the model's own call format (None when it offers none): its prompt, the params
        that enforce its tool_choice, and the parser of its reply."""
        if not self.tools:
            return None
        return ToolRequest(self.tools, self.tool_choice, self.parallel_tool_calls, detect_format(template.source))

    def choice_params(self, j: int, tools: ToolRequest | None = None,
                      tokenizer: Tokenizer | None = None) -> SamplingParams:
        """Choice j of n: its seed is derived from the request's (seed + j, wrapping), so n choices differ and
        repeat; with tools, the constraint that enforces tool_choice (the grammar needs the model's `tokenizer`)."""
        seed = self.params.seed
        params = replace(self.params, seed=None if seed is None else (seed - SEED_MIN + j) % 2**64 + SEED_MIN)
        return tools.params(params, tokenizer) if tools is not None else params


def request_params(body: dict, endpoint: str, defaults: dict | None = None) -> SamplingParams:
    """The body's SamplingParams (fields as the OpenAI API names them); raises `ParameterError` naming the field.
    `defaults`: as parse_request's."""
    return _sampling(check_fields(_object(body), endpoint), endpoint, defaults=defaults)


def parse_request(body: dict, endpoint: str, base: SamplingParams | None = None,
                  defaults: dict | None = None) -> OpenAIRequest:
    """An OpenAI-style body for `endpoint` ("chat" or "completions") -> OpenAIRequest, or `ParameterError`.
    `base`: the params the body's sampling fields are applied to (a batch job's params given in Python).
    `defaults`: the served model's sampling defaults (GenerationConfig.defaults): fields the body leaves out
    take these, then SamplingParams' own."""
    fields = check_fields(_object(body), endpoint)
    key = ENDPOINTS[endpoint]
    if key not in fields:
        raise ParameterError(key, f"{key} is required")
    params = _sampling(fields, endpoint, base, defaults)
    stream = _bool(fields, "stream")
    options = fields.get("stream_options", {})
    if not isinstance(options, dict):
        raise ParameterError("stream_options", "must be an object")
    if options and not stream:
        raise ParameterError("stream_options", "stream_options is only allowed when stream is true",
                             "invalid_value")
    include_usage = _bool(options, "include_usage", "stream_options.include_usage")
    model = fields.get("model")
    if model is not None and not isinstance(model, str):
        raise ParameterError("model", "must be a string")
    if endpoint == "chat":
        if params.prediction is not None:
            _check_prediction(params, fields)
        tools = parse_tools(fields.get("tools"))
        choice = parse_tool_choice(fields.get("tool_choice"), tools)
        parallel = _bool(fields, "parallel_tool_calls", default=True)
        return OpenAIRequest(True, model, normalize_messages(fields["messages"]), [], params, stream, include_usage,
                             tools=tools, tool_choice=choice, parallel_tool_calls=parallel)
    prompts = _prompts(fields["prompt"])
    if len(prompts) * params.n > MAX_PROMPTS:
        raise ParameterError("prompt", f"prompts times n must be at most {MAX_PROMPTS}, got {len(prompts) * params.n}")
    echo = _bool(fields, "echo")
    if echo and params.logprobs:
        raise ParameterError("echo", "echo with logprobs (the prompt's logprobs) is not supported", "unsupported_value")
    best_of = fields.get("best_of", params.n)
    if not _is_int(best_of) or best_of < params.n:
        raise ParameterError("best_of", f"must be an integer >= n ({params.n}), got {best_of!r}")
    if best_of != params.n:
        raise ParameterError("best_of", f"best_of must equal n ({params.n}) here: choosing the best of more "
                                        f"samples is not supported", "unsupported_value")
    return OpenAIRequest(False, model, None, prompts, params, stream, include_usage, echo)


def _object(body) -> dict:
    if not isinstance(body, dict):
        raise ParameterError("body", f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _sampling(fields: dict, endpoint: str, base: SamplingParams | None = None,
              defaults: dict | None = None) -> SamplingParams:
    # declared fields keep their names; max_completion_tokens, response_format and completions' logprobs map apart
    kw = {f.name: fields[f.name] for f in REQUEST_FIELDS if endpoint in f.endpoints and f.name in fields}
    if "prediction" in kw:
        kw["prediction"] = prediction_text(kw["prediction"])
    constraint = format_constraint(fields.get("response_format"))
    if constraint is not None:
        kw["constraint"] = constraint
    limits = {k: fields[k] for k in ("max_tokens", "max_completion_tokens") if k in fields}
    if len(set(map(repr, limits.values()))) > 1:
        raise ParameterError("max_tokens", "max_tokens and max_completion_tokens differ; give one of them")
    if limits:
        kw["max_tokens"] = next(iter(limits.values()))
    logprobs = fields.get("logprobs")
    if endpoint == "completions" and logprobs is not None:  # legacy: logprobs=k alternatives per token
        if not _is_int(logprobs):
            raise ParameterError("logprobs", f"must be an integer (alternatives per token), got {logprobs!r}")
        kw.update(logprobs=True, top_logprobs=logprobs)
    if base is not None:
        kw = {**_fields_of(base, without=kw), **kw}
    kw = {**(defaults or {}), **kw}  # the one place a served model's defaults come in
    try:
        return SamplingParams(**kw)
    except ParameterError as e:
        if e.param == "top_logprobs" and endpoint == "completions":
            raise ParameterError("logprobs", str(e).replace("top_logprobs", "logprobs", 1)) from None
        raise


def prediction_text(prediction) -> str:
    """OpenAI's `prediction` object ({"type": "content", "content": text or text parts}) -> its text."""
    if not isinstance(prediction, dict) or prediction.get("type") != "content" or set(prediction) - {"type", "content"}:
        raise ParameterError("prediction", 'must be an object {"type": "content", "content": ...}')
    content = prediction.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ParameterError("prediction.content", "must be a string or a list of text parts")


def _check_prediction(params: SamplingParams, fields: dict) -> None:
    """What OpenAI refuses with Predicted Outputs is refused here too (400 invalid_value, naming the field)."""
    for name, refused, what in (("n", params.n > 1, "n greater than 1"), ("logprobs", params.logprobs, "logprobs"),
                                ("tools", bool(fields.get("tools")), "tools (function calling)"),
                                ("presence_penalty", params.presence_penalty > 0, "presence_penalty greater than 0"),
                                ("frequency_penalty", params.frequency_penalty > 0, "frequency_penalty greater than 0")):
        if refused:
            raise ParameterError(name, f"Invalid parameter: {what} is not supported with predicted outputs.",
                                 "invalid_value")


def _fields_of(base: SamplingParams, without: dict) -> dict:
    """`base`'s fields, less the groups (TOGETHER) that the body's `without` sets."""
    dropped = {name for group in TOGETHER if set(group) & set(without) for name in group}
    return {f.name: getattr(base, f.name) for f in dataclass_fields(base) if f.name not in dropped}


def _prompts(prompt) -> list[str | list[int]]:
    """A string, a list of strings, token ids, or a list of token-id lists -> the list of prompts."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(_is_int(t) for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, (list, tuple)) and p and all(_is_int(t) for t in p) for p in prompt):
            return [list(p) for p in prompt]
    raise ParameterError("prompt", "prompt must be a string, a list of strings, a list of token ids or a list of "
                                   "token-id lists (none empty)")


def _bool(fields: dict, key: str, name: str | None = None, default: bool = False) -> bool:
    value = fields.get(key, default)
    if not isinstance(value, bool):
        raise ParameterError(name or key, f"must be true or false, got {value!r}")
    return value


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
