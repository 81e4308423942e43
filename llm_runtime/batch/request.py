"""One input line of a batch job -> a request: `{"custom_id", "prompt" | "messages", request fields...}` or an
OpenAI Batch API request line (`{"custom_id", "method", "url", "body"}`), through the server's field policy and
request mapping (llm_runtime.openai.request), so a line means what the same body means to the server."""
from __future__ import annotations

import json
from dataclasses import dataclass

from llm_runtime.errors import ParameterError
from llm_runtime.openai.request import OpenAIRequest, parse_request
from llm_runtime.sampling.params import SamplingParams

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}  # url -> endpoint


class LineError(ValueError):
    """An input line that cannot run; reported as an error line under `custom_id`."""

    def __init__(self, custom_id: str, code: str, message: str):
        super().__init__(message)
        self.custom_id, self.code = custom_id, code


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    request: OpenAIRequest

    @property
    def chat(self) -> bool:
        return self.request.chat

    @property
    def prompt(self) -> str | list:
        """Text or token ids; the chat messages when `chat`."""
        return self.request.messages if self.chat else self.request.prompts[0]

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @classmethod
    def parse(cls, raw: bytes, line_no: int, params: SamplingParams | None = None,
              defaults: dict | None = None) -> BatchRequest:
        """One input line -> a request, or LineError; the line's sampling fields apply over `params`, and the
        fields it leaves out take `defaults` (the model's recommended sampling) when `params` is None."""
        try:
            obj = json.loads(raw)
        except ValueError as e:  # invalid JSON or invalid UTF-8
            raise LineError(f"line-{line_no}", "invalid_json", f"line {line_no} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise LineError(f"line-{line_no}", "invalid_request", f"line {line_no} is not a JSON object")
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            raise LineError(f"line-{line_no}", "invalid_request",
                            f"line {line_no} has no custom_id (a non-empty string)")
        body, endpoint = _body(obj, cid)
        try:
            request = parse_request(body, endpoint, params, defaults)
        except ParameterError as e:
            raise LineError(cid, "invalid_request", str(e)) from None
        if request.n != 1:
            raise LineError(cid, "invalid_request", "n must be 1 in a batch job; give each sample its own custom_id")
        if request.stream:
            raise LineError(cid, "invalid_request", "stream must be false in a batch job (each line is one reply)")
        if not request.chat and len(request.prompts) != 1:
            raise LineError(cid, "invalid_request", "prompt must be a string or a list of token ids (one prompt "
                                                    "per line)")
        return cls(cid, request)


def _body(obj: dict, cid: str) -> tuple[dict, str]:
    """The request body and its endpoint ("chat" or "completions"), for both input forms."""
    if "body" in obj or "url" in obj:  # an OpenAI Batch API request line
        url, body = obj.get("url"), obj.get("body")
        if url not in ENDPOINTS:
            raise LineError(cid, "invalid_request", f"unsupported url {url!r} (use {' or '.join(ENDPOINTS)})")
        if obj.get("method", "POST") != "POST":
            raise LineError(cid, "invalid_request", f"unsupported method {obj.get('method')!r} (use POST)")
        if not isinstance(body, dict):
            raise LineError(cid, "invalid_request", "body must be a JSON object")
        key = "messages" if ENDPOINTS[url] == "chat" else "prompt"
        if key not in body:
            raise LineError(cid, "invalid_request", f"a {url} body needs {key}")
        return body, ENDPOINTS[url]
    if "prompt" in obj and "messages" in obj:
        raise LineError(cid, "invalid_request", "the request has both prompt and messages; give one")
    if "prompt" not in obj and "messages" not in obj:
        raise LineError(cid, "invalid_request", "the request has neither prompt nor messages")
    body = {k: v for k, v in obj.items() if k != "custom_id"}
    return body, "chat" if "messages" in obj else "completions"
