"""Request bodies (pydantic lives only here, at the edge) and their conversion to SamplingParams."""
from __future__ import annotations

import logging
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm_runtime.sampling_params import MAX_N, MAX_TOP_LOGPROBS, SEED_MAX, SEED_MIN, ParameterError, SamplingParams

from .errors import bad_request

log = logging.getLogger(__name__)

MAX_STOP, MAX_STOP_LEN, MAX_BIAS, MAX_MESSAGES, MAX_TEXT, MAX_PROMPT_IDS = 4, 256, 300, 1024, 1 << 20, 1 << 17
DEFAULT_CHAT_MAX_TOKENS = 1024  # when a chat request names no limit (capped by the room left in the context)
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_PROMPT_IDS)]
StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_LEN)]
TokenKey = Annotated[str, Field(pattern=r"^[0-9]{1,12}$")]  # a token id, as a JSON object key
Bias = Annotated[float, Field(ge=-100, le=100)]


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = Field(default=None, max_length=MAX_TEXT)

    def plain(self) -> dict:
        """The template's message: developer is system, text parts become one string."""
        content = self.content
        if isinstance(content, list):
            content = "\n".join(p.text for p in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    include_usage: bool = False


class Common(BaseModel):
    """Fields shared by chat and completions. Types are strict; unknown fields are ignored and logged."""

    model_config = ConfigDict(strict=True, extra="allow")
    model: str = Field(max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: Annotated[dict[TokenKey, Bias], Field(max_length=MAX_BIAS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    # extensions, as vLLM names them
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.0, ge=0.01, le=10)  # far below 1, logits overflow to inf
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False

    @model_validator(mode="after")
    def _log_unknown(self):
        if self.model_extra:
            log.info("ignoring unknown fields: %s", ", ".join(sorted(self.model_extra)[:20]))
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _sampling(self, max_tokens: int, logprobs: bool, top_logprobs: int, index: int) -> SamplingParams:
        """Choice `index` of n: its seed is derived from the request's, so n choices differ and repeat."""
        seed = None if self.seed is None else (self.seed - SEED_MIN + index) % 2**64 + SEED_MIN
        bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        try:
            return SamplingParams(
                max_tokens=max_tokens, min_tokens=self.min_tokens, temperature=self.temperature, top_k=self.top_k,
                top_p=self.top_p, min_p=self.min_p, repetition_penalty=self.repetition_penalty,
                presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                logit_bias=bias or None, seed=seed, stop=self.stop or (), ignore_eos=self.ignore_eos,
                logprobs=logprobs, top_logprobs=top_logprobs)
        except ParameterError as e:
            raise bad_request(str(e), e.param) from None


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @property
    def asked_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def params(self, index: int, room: int) -> SamplingParams:
        """`room`: tokens left in the context after the prompt."""
        max_tokens = self.asked_tokens or min(DEFAULT_CHAT_MAX_TOKENS, room)
        return self._sampling(max_tokens, self.logprobs, self.top_logprobs or 0, index)


class CompletionRequest(Common):
    prompt: Annotated[str, Field(max_length=MAX_TEXT)] | TokenIds
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False

    @property
    def asked_tokens(self) -> int | None:
        return self.max_tokens

    def params(self, index: int, room: int) -> SamplingParams:
        if self.echo:
            raise bad_request("echo is not supported", "echo")
        max_tokens = self.max_tokens or min(DEFAULT_COMPLETION_MAX_TOKENS, room)
        return self._sampling(max_tokens, self.logprobs is not None, self.logprobs or 0, index)


# Reply shapes, for the OpenAPI document only: replies are built as dicts by server/streaming.py.
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ReplyMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ReplyMessage
    logprobs: dict | None
    finish_reason: Literal["stop", "length"] | None


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
