"""Request bodies (pydantic lives only here, at the edge): types and bounds for the OpenAPI document and a first
check. The sampling fields are built from their declaration (llm_runtime.sampling.fields); what each field does
(supported, 400, hint) is llm_runtime.openai.fields' table, applied with the one mapping,
llm_runtime.openai.request."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from llm_runtime.sampling.fields import LIMITS, REQUEST_FIELDS, Kind, Limit, RequestField

MAX_MESSAGES, MAX_TEXT, MAX_PROMPT_IDS = 1024, 1 << 20, 1 << 17  # transport limits of one body


def _bounds(lim: Limit) -> dict:
    return {"gt" if lim.lo_open else "ge": lim.lo, **({"le": lim.hi} if lim.hi is not None else {})}


def limited(name: str, **kw):
    """An optional field bounded by LIMITS[name] (null: the default of SamplingParams)."""
    return Field(default=None, **_bounds(LIMITS[name]), **kw)


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_IDS)]
TokenKey = Annotated[str, Field(pattern=r"^[0-9]{1,12}$")]  # a token id, as a JSON object key
Text = Annotated[str, Field(max_length=MAX_TEXT)]


class Prediction(BaseModel):
    """Predicted Outputs: `content` is the text, or text parts (checked by llm_runtime.openai.request)."""

    model_config = ConfigDict(strict=True, extra="forbid")
    type: Literal["content"]
    content: Text | Annotated[list[dict], Field(max_length=MAX_MESSAGES)]


def _annotation(f: RequestField):
    """The pydantic type of a declared field's value: `limit` bounds the value or each entry, `items` the entries."""
    match f.kind:
        case Kind.INT | Kind.REAL:
            return Annotated[int if f.kind is Kind.INT else float, Field(**_bounds(f.limit))]
        case Kind.BOOL:
            return bool
        case Kind.TEXT:
            return Text
        case Kind.STRINGS:
            one = Annotated[str, Field(min_length=f.limit.lo, max_length=f.limit.hi)]
            return one | Annotated[list[one], Field(max_length=f.items)]
        case Kind.TOKEN_IDS:
            return Annotated[list[Annotated[int, Field(**_bounds(f.limit))]], Field(max_length=f.items)]
        case Kind.TOKEN_BIAS:
            return Annotated[dict[TokenKey, Annotated[float, Field(**_bounds(f.limit))]], Field(max_length=f.items)]
        case Kind.PREDICTION:
            return Prediction


class Body(BaseModel):
    """A request body. Types are strict; other fields pass on to the field policy, which refuses unknown and
    unsupported ones by name (400) and drops the documented hints."""

    model_config = ConfigDict(strict=True, extra="allow")

    def body(self) -> dict:
        """The fields the client sent, as plain JSON values, for the one request mapping."""
        return self.model_dump(exclude_unset=True)


def sampling_body(endpoint: str) -> type[Body]:
    """A Body holding the declared sampling fields `endpoint` takes, each optional (null: SamplingParams' default)."""
    return create_model(f"{endpoint.title()}Sampling", __base__=Body, **{
        f.name: (_annotation(f) | None, Field(default=None)) for f in REQUEST_FIELDS if endpoint in f.endpoints})


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
    # parts are checked by llm_runtime.chat.messages, which names a part the model cannot take in one line
    content: Text | Annotated[list[dict], Field(max_length=MAX_MESSAGES)] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: Annotated[list[ToolCall], Field(max_length=MAX_MESSAGES)] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool | None = None


class Common(Body):
    """The protocol fields shared by chat and completions; the sampling fields come from their declaration."""

    model: str = Field(max_length=256)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    response_format: dict | None = None  # checked by llm_runtime.openai.response_format


class ChatRequest(Common, sampling_body("chat")):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = limited("max_tokens")
    tools: Annotated[list[dict], Field(max_length=MAX_MESSAGES)] | None = None  # checked by structured.tools
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(Common, sampling_body("completions")):
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
    # extension: the sampling a request that leaves these fields out gets (serve --generation-config)
    generation_config: dict[str, float] = {}
    root: str | None = None  # a LoRA adapter's: the file or folder it was read from
    parent: str | None = None  # a LoRA adapter's: the served model it runs on


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class LoadLoraAdapter(BaseModel):
    lora_name: str = Field(min_length=1, max_length=256)
    lora_path: str = Field(min_length=1, max_length=4096)  # a PEFT folder, a GGUF LoRA or an .onnx_adapter


class UnloadLoraAdapter(BaseModel):
    lora_name: str = Field(min_length=1, max_length=256)


def ok(model: type[BaseModel], stream: bool = False) -> dict:
    """The 200 entry of `responses=`: JSON of `model`, or (streaming) server-sent events."""
    event = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
    content = {"text/event-stream": {"schema": event}} if stream else {}
    return {200: {"model": model, "content": content}}
