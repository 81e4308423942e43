"""Request bodies (pydantic lives only here, at the edge) and their conversion to SamplingParams."""
from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm_runtime.sampling_params import MAX_N, ParameterError, SamplingParams

from .errors import bad_request

log = logging.getLogger(__name__)

MAX_STOP, MAX_STOP_LEN, MAX_BIAS, MAX_MESSAGES, MAX_TEXT = 4, 256, 300, 512, 1_000_000


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 500)}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = Field(default=None)

    def plain(self) -> dict:
        text = self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Common(BaseModel):
    """Fields shared by chat and completions; unknown fields are ignored (and logged)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(max_length=256)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0, le=1)
    repetition_penalty: float = Field(default=1.0, gt=0, le=10)
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False

    @model_validator(mode="after")
    def _bounds(self):
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > MAX_STOP or any(len(s) > MAX_STOP_LEN or not s for s in stops):
            raise ValueError(f"stop: at most {MAX_STOP} non-empty strings of at most {MAX_STOP_LEN} characters")
        if self.logit_bias and len(self.logit_bias) > MAX_BIAS:
            raise ValueError(f"logit_bias: at most {MAX_BIAS} entries")
        if self.model_extra:
            log.info("ignoring unknown fields: %s", ", ".join(sorted(self.model_extra)))
        return self

    def sampling(self, max_tokens: int | None, logprobs: bool, top_logprobs: int, index: int = 0) -> SamplingParams:
        seed = None if self.seed is None else (self.seed + index) % 2**63
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError:
            raise bad_request("logit_bias keys must be token ids", "logit_bias") from None
        try:
            return SamplingParams(
                max_tokens=max_tokens or 16, min_tokens=self.min_tokens, temperature=self.temperature,
                top_k=self.top_k, top_p=self.top_p, min_p=self.min_p, repetition_penalty=self.repetition_penalty,
                presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                logit_bias=bias or None, seed=seed, stop=self.stop or (), ignore_eos=self.ignore_eos,
                logprobs=logprobs, top_logprobs=top_logprobs)
        except ParameterError as e:
            raise bad_request(str(e), e.param) from None


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def params(self, index: int, default_max: int) -> SamplingParams:
        return self.sampling(self.max_completion_tokens or self.max_tokens or default_max, self.logprobs,
                             self.top_logprobs or 0, index)


class CompletionRequest(Common):
    prompt: str = Field(max_length=MAX_TEXT)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False

    def params(self, index: int, default_max: int) -> SamplingParams:
        return self.sampling(self.max_tokens or 16, self.logprobs is not None, self.logprobs or 0, index)


def first_error(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """pydantic's errors -> (message, param) for the first one."""
    e = errors[0]
    if e.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})", None
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    msg = e.get("msg", "invalid request")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
        param = param or msg.split(":")[0]
    return (f"{param}: {msg}" if param else msg), (param.split(".")[0] if param else None)
