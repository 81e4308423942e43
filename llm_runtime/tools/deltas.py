"""One chat choice's streamed text as OpenAI `delta` objects: content, and tool calls as OpenAI streams them (per
call index: `id`, `type` and `function.name` once, then `function.arguments` fragments). The non-streamed message
is `fold_deltas` over the same deltas."""
from __future__ import annotations

from .parser import ContentDelta, Event
from .request import ToolRequest


class ToolDeltas:
    def __init__(self, request: ToolRequest):
        self.parser = request.parser() if request.calls_allowed else None

    def add(self, text: str, last: bool = False) -> list[dict]:
        """The deltas this text completes (`last`: the choice's final text, which releases what was held); with
        tool_choice "none", the text as content."""
        if self.parser is None:
            return [{"content": text}] if text else []
        events = self.parser.feed(text) if text else []
        return [delta(e) for e in (events + self.parser.finish() if last else events)]

    def finish_reason(self, reason: str | None) -> str | None:
        """"tool_calls" for a reply that made calls and ended on its own."""
        return "tool_calls" if reason == "stop" and self.parser is not None and self.parser.calls else reason


def delta(event: Event) -> dict:
    if isinstance(event, ContentDelta):
        return {"content": event.text}
    call: dict = {"index": event.index}
    if event.id is not None:
        call.update(id=event.id, type="function", function={"name": event.name, "arguments": event.arguments})
    else:
        call["function"] = {"arguments": event.arguments}
    return {"tool_calls": [call]}


def fold_deltas(deltas: list[dict]) -> dict:
    """The message those deltas make: `content` (None when there was only tool calls) and `tool_calls`."""
    content, calls = [], {}
    for d in deltas:
        content.append(d.get("content") or "")
        for part in d.get("tool_calls") or ():
            call = calls.setdefault(part["index"], {"id": None, "type": "function",
                                                    "function": {"name": None, "arguments": ""}})
            call["id"] = part.get("id") or call["id"]
            call["function"]["name"] = part.get("function", {}).get("name") or call["function"]["name"]
            call["function"]["arguments"] += part.get("function", {}).get("arguments", "")
    text = "".join(content)
    message = {"content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message

