"""Request bodies (pydantic lives only here, at the edge): types and bounds for the OpenAPI document and a first
check. Bounds come from llm_runtime.sampling.params; what each field does (supported, 400, hint) is
llm_runtime.openai.fields' table, applied with the one mapping, llm_runtime.openai.request."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_runtime.sampling.params import LIMITS, MAX_LOGIT_BIAS, MAX_STOP, MAX_STOP_LEN

MAX_MESSAGES, MAX_TEXT, MAX_PROMPT_IDS = 1024, 1 << 20, 1 << 17  # transport limits of one body


def limited(name: str, **kw):
    """An optional field bounded by LIMITS[name] (null: the default of SamplingParams)."""
    lim = LIMITS[name]
    bounds = {"gt" if lim.lo_open else "ge": lim.lo, **({"le": lim.hi} if lim.hi is not None else {})}
    return Field(default=None, **bounds, **kw)


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_IDS)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LEN)]
TokenKey = Annotated[str, Field(pattern=r"^[0-9]{1,12}$")]  # a token id, as a JSON object key
Bias = Annotated[float, Field(ge=LIMITS["logit_bias"].lo, le=LIMITS["logit_bias"].hi)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: Text


class RefusalPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["refusal"]
    refusal: Text


class FunctionCall(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    name: str = Field(max_length=256)
    arguments: Text  # a JSON object, as a string


class ToolCall(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    """A chat message; keys OpenAI does not define are ignored, as OpenAI ignores them."""

    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | Annotated[list[TextPart | RefusalPart], Field(max_length=MAX_MESSAGES)] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_MESSAGES)] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool | None = None


class Extensions(BaseModel):
    """The sampling extensions of every request body (chat, completions, responses), as vLLM names them."""

    model_config = ConfigDict(strict=True, extra="allow")
    top_k: int | None = limited("top_k")
    min_p: float | None = limited("min_p")
    repetition_penalty: float | None = limited("repetition_penalty")
    min_tokens: int | None = limited("min_tokens")
    ignore_eos: bool | None = None
    stop_token_ids: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_STOP_LEN)] | None = None

    def body(self) -> dict:
        """The fields the client sent, as plain JSON values, for the one request mapping."""
        return self.model_dump(exclude_unset=True)


class Common(Extensions):
    """Fields shared by chat and completions. Types are strict; other fields pass on to the field policy, which
    refuses unknown and unsupported ones by name (400) and drops the documented hints."""

    model_config = ConfigDict(strict=True, extra="allow")
    model: str = Field(max_length=256)
    max_tokens: int | None = limited("max_tokens")
    temperature: float | None = limited("temperature")
    top_p: float | None = limited("top_p")
    n: int | None = limited("n")
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = limited("seed")
    presence_penalty: float | None = limited("presence_penalty")
    frequency_penalty: float | None = limited("frequency_penalty")
    logit_bias: Annotated[dict[TokenKey, Bias], Field(max_length=MAX_LOGIT_BIAS)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    # structured output (checked by llm_runtime.openai.response_format and the constraint compiler)
    response_format: dict | None = None
    regex: Text | None = None  # extension: a regular expression the whole reply matches
    grammar: Text | None = None  # extension: a Lark grammar (llguidance's dialect)



class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = limited("max_tokens")
    logprobs: bool | None = None
    top_logprobs: int | None = limited("top_logprobs")
    tools: Annotated[list[dict], Field(max_length=MAX_MESSAGES)] | None = None  # checked by structured.tools
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(Common):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_MESSAGES)] | TokenIds | \
        Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_MESSAGES)]
    logprobs: int | None = limited("top_logprobs")
    echo: bool | None = None
    best_of: int | None = limited("n")


# Reply shapes, for the OpenAPI document only: replies are built as dicts by llm_runtime/openai_reply.py.
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ReplyToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: dict  # name, and arguments as JSON text


class ReplyMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ReplyToolCall] | None = None
    refusal: None
    annotations: list


class ChatChoice(BaseModel):
    index: int
    message: ReplyMessage
    logprobs: dict | None
    finish_reason: Literal["stop", "length", "tool_calls"] | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: dict | None
    finish_reason: Literal["stop", "length"] | None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


def ok(model: type[BaseModel], stream: bool = False) -> dict:
    """The 200 entry of `responses=`: JSON of `model`, or (streaming) server-sent events."""
    event = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
    content = {"text/event-stream": {"schema": event}} if stream else {}
    return {200: {"model": model, "content": content}}
