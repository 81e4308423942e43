"""The /v1/responses body and reply shapes at the edge (pydantic): types and bounds for the OpenAPI document and a
first check. What each field does is llm_runtime.openai.fields' `responses` table, applied by
server/response_request.py; input items are checked there, naming the item."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from .response_request import IDENTIFIERS
from .schemas import MAX_MESSAGES, Text, limited, sampling_body


class ResponsesBody(sampling_body("responses")):
    """POST /v1/responses: the declared sampling fields it takes, and its own."""

    model: str = Field(max_length=256)
    input: Text | Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_MESSAGES)]
    instructions: Text | None = None
    previous_response_id: str | None = Field(default=None, max_length=256)
    store: bool | None = None
    stream: bool | None = None
    max_output_tokens: int | None = limited("max_tokens")
    top_logprobs: int | None = limited("top_logprobs")
    include: Annotated[list[str], Field(max_length=16)] | None = None
    metadata: dict[str, str] | None = None
    tools: Annotated[list[dict], Field(max_length=MAX_MESSAGES)] | None = None  # checked by structured.tools
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    # hints, echoed in the response
    user: str | None = Field(default=None, max_length=IDENTIFIERS["user"])
    safety_identifier: str | None = Field(default=None, max_length=IDENTIFIERS["safety_identifier"])
    prompt_cache_key: str | None = Field(default=None, max_length=IDENTIFIERS["prompt_cache_key"])


# Reply shapes, for the OpenAPI document only: replies are built as dicts by server/response_events.py.
class OutputText(BaseModel):
    type: Literal["output_text"]
    text: str
    annotations: list
    logprobs: list[dict] | None = None


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"]
    status: Literal["in_progress", "completed", "incomplete"]
    role: Literal["assistant"]
    content: list[OutputText]


class FunctionCall(BaseModel):
    id: str
    type: Literal["function_call"]
    status: Literal["in_progress", "completed", "incomplete"]
    call_id: str
    name: str
    arguments: str  # a JSON object as text


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class ResponseObject(BaseModel):
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[OutputMessage | FunctionCall]
    usage: ResponseUsage | None
    instructions: str | None
    previous_response_id: str | None
    store: bool
    error: dict | None
    incomplete_details: dict | None
    metadata: dict[str, str]
    # the request's fields as applied (server/response_request.echo)
    temperature: float
    top_p: float
    presence_penalty: float
    frequency_penalty: float
    top_logprobs: int
    max_output_tokens: int | None
    text: dict
    tools: list[dict]
    tool_choice: str | dict
    parallel_tool_calls: bool
    user: str | None
    safety_identifier: str | None
    prompt_cache_key: str | None
    truncation: Literal["disabled"]
    service_tier: Literal["default"]


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"]
    deleted: bool


class InputItemList(BaseModel):
    object: Literal["list"]
    data: list[dict]
    first_id: str | None
    last_id: str | None
    has_more: bool
