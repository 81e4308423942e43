"""A Responses API body -> what to generate: the field policy (llm_runtime.openai.fields' `responses` table), then
the one request mapping to SamplingParams (the chat body's, with max_output_tokens as max_tokens)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from llm_runtime.errors import ParameterError
from llm_runtime.openai.fields import check_fields
from llm_runtime.openai.request import request_params
from llm_runtime.openai.response_format import format_constraint
from llm_runtime.sampling.fields import REQUEST_FIELDS, RESPONSES
from llm_runtime.sampling.params import SamplingParams
from llm_runtime.tools.tool import Tool, parse_responses_tool_choice, parse_responses_tools

from .response_input import input_items, input_messages, input_origins

SAMPLING = tuple(f.name for f in REQUEST_FIELDS if RESPONSES in f.endpoints)  # as the chat body names them
LOGPROBS = "message.output_text.logprobs"
INCLUDABLE = (LOGPROBS, "reasoning.encrypted_content", "file_search_call.results", "web_search_call.results",
              "web_search_call.action.sources", "message.input_image.image_url",
              "computer_call_output.output.image_url", "code_interpreter_call.outputs")
MAX_METADATA, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
# hints (nothing here acts on them), echoed as OpenAI echoes them: name -> the longest value taken
IDENTIFIERS = {"user": 256, "safety_identifier": 64, "prompt_cache_key": 256}


@dataclass(frozen=True)
class ResponsesRequest:
    model: str
    messages: list[dict]  # this turn's input as chat messages
    items: list[dict]  # the same input as listed items (GET /v1/responses/{id}/input_items)
    instructions: str | None
    previous_response_id: str | None
    store: bool
    stream: bool
    params: SamplingParams
    metadata: dict[str, str]
    max_output_tokens: int | None
    top_logprobs: int | None
    text_format: dict  # `text.format`, echoed in the response
    tools: tuple[Tool, ...] = ()  # the function tools offered
    tool_choice: str = "auto"  # "none", "auto", "required" or a tool's name
    parallel_tool_calls: bool = True
    identifiers: dict[str, str | None] = field(default_factory=dict)  # IDENTIFIERS' values, as sent
    origins: tuple[str, ...] = ()  # messages[k] came from the input item origins[k] ("input[i]")


def parse_responses(body: dict, defaults: dict | None = None) -> ResponsesRequest:
    """A /v1/responses body -> ResponsesRequest, or `ParameterError` naming the field; `defaults`: the model's
    sampling defaults (as parse_request's)."""
    fields = check_fields(body, "responses")
    for key in ("model", "input"):
        if key not in fields:
            raise ParameterError(key, f"{key} is required")
    include = fields.get("include", [])
    if not isinstance(include, list) or any(x not in INCLUDABLE for x in include):
        raise ParameterError("include", f"include must be a list of {', '.join(INCLUDABLE)}")
    chat = {k: fields[k] for k in SAMPLING if k in fields}
    if "max_output_tokens" in fields:
        chat["max_tokens"] = fields["max_output_tokens"]
    if LOGPROBS in include:
        chat.update(logprobs=True, top_logprobs=fields.get("top_logprobs", 0))
    try:
        params = request_params(chat, "chat", defaults)
    except ParameterError as e:
        raise ParameterError({"max_tokens": "max_output_tokens"}.get(e.param, e.param), str(e), e.code) from None
    text_format = _text_format(fields.get("text", {}))
    if (constraint := _constraint(text_format)) is not None:
        params = replace(params, constraint=constraint)
    instructions = fields.get("instructions")
    previous = fields.get("previous_response_id")
    for key, value in (("model", fields["model"]), ("instructions", instructions), ("previous_response_id", previous)):
        if value is not None and not isinstance(value, str):
            raise ParameterError(key, f"{key} must be a string")
    messages = input_messages(fields["input"])
    tools = parse_responses_tools(fields.get("tools"))
    return ResponsesRequest(fields["model"], messages, input_items(fields["input"]), instructions, previous,
                            _flag(fields, "store", True), _flag(fields, "stream", False), params,
                            _metadata(fields.get("metadata", {})), fields.get("max_output_tokens"),
                            fields.get("top_logprobs"), text_format, tools,
                            parse_responses_tool_choice(fields.get("tool_choice", "auto"), tools),  # as echoed
                            _flag(fields, "parallel_tool_calls", True), _identifiers(body),
                            input_origins(fields["input"]))


def echo(r: ResponsesRequest) -> dict:
    """The request's fields as the response object carries them, as OpenAI echoes them (the sampling values
    in force, defaults included)."""
    return {"instructions": r.instructions, "previous_response_id": r.previous_response_id, "store": r.store,
            "temperature": r.params.temperature, "top_p": r.params.top_p, "presence_penalty": r.params.presence_penalty,
            "frequency_penalty": r.params.frequency_penalty, "max_output_tokens": r.max_output_tokens,
            "top_logprobs": r.top_logprobs or 0, "metadata": r.metadata, "text": {"format": r.text_format},
            **r.identifiers, **_tools_echo(r)}


def _tools_echo(r: ResponsesRequest) -> dict:
    """The response's `tools`, `tool_choice` and `parallel_tool_calls`, as OpenAI echoes them."""
    choice = r.tool_choice if r.tool_choice in ("none", "auto", "required") else {"type": "function",
                                                                                  "name": r.tool_choice}
    return {"tools": [{"type": "function", "name": t.name, "description": t.description or None,
                       "parameters": t.parameters, "strict": t.strict} for t in r.tools],
            "tool_choice": choice, "parallel_tool_calls": r.parallel_tool_calls}


def _text_format(text) -> dict:
    """`text` -> its `format` (default text); other keys of `text` (verbosity) are refused by name."""
    if not isinstance(text, dict):
        raise ParameterError("text", f"text must be an object, got {type(text).__name__}")
    if other := sorted(set(text) - {"format"}):
        raise ParameterError("text", f"Unsupported parameter: 'text.{other[0]}' is not supported by this server",
                             "unsupported_parameter")
    return text.get("format") or {"type": "text"}


def _constraint(text_format: dict):
    try:
        return format_constraint(text_format, "text.format")
    except ParameterError as e:
        raise ParameterError("text", str(e), e.code) from None


def _identifiers(body: dict) -> dict[str, str | None]:
    out = {}
    for key, longest in IDENTIFIERS.items():
        value = body.get(key)
        if value is not None and not (isinstance(value, str) and len(value) <= longest):
            raise ParameterError(key, f"{key} must be a string of at most {longest} characters")
        out[key] = value
    return out


def _flag(fields: dict, key: str, default: bool) -> bool:
    value = fields.get(key, default)
    if not isinstance(value, bool):
        raise ParameterError(key, f"{key} must be true or false, got {value!r}")
    return value


def _metadata(value) -> dict[str, str]:
    ok = isinstance(value, dict) and len(value) <= MAX_METADATA and all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= MAX_METADATA_KEY and len(v) <= MAX_METADATA_VALUE
        for k, v in value.items())
    if not ok:
        raise ParameterError("metadata", f"metadata must be at most {MAX_METADATA} string pairs (keys up to "
                                         f"{MAX_METADATA_KEY} characters, values up to {MAX_METADATA_VALUE})")
    return value
