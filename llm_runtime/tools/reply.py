"""A whole reply from the tool-call parser's events: its content and its calls, as the non-streamed reply and
the streamed deltas both see them."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .format import ToolFormat
from .parser import ContentDelta, Event, ToolCallParser
from .tool import ToolCall


@dataclass
class Reply:
    """A reply's content (None when it had none) and tool calls."""

    content: str | None
    tool_calls: list[ToolCall]


def fold_reply(events: Iterable[Event]) -> Reply:
    """The non-streamed reply from the events."""
    content: list[str] = []
    calls: dict[int, list] = {}
    for event in events:
        if isinstance(event, ContentDelta):
            content.append(event.text)
        elif event.id is not None:
            calls[event.index] = [event.id, event.name, event.arguments]
        else:
            calls[event.index][2] += event.arguments
    text = "".join(content)
    return Reply(text if text or not calls else None, [ToolCall(*calls[i]) for i in sorted(calls)])


def parse_reply(fmt: ToolFormat, text: str, stream_arguments: bool = False) -> Reply:
    """A whole reply's content and calls, as the incremental parser reads it."""
    parser = ToolCallParser(fmt, stream_arguments)
    return fold_reply([*parser.feed(text), *parser.finish()])
