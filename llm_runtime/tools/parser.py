"""Incremental tool-call parsing: text deltas in, content deltas and OpenAI tool-call deltas out.

No markup reaches the content: text that could be the start of a call marker is held until it is known not
to be. Two ways to report a call:
- `stream_arguments=True`, for replies the constraint enforces: a call's id and name as soon as the name is
  complete, then its arguments as they are generated (a truncated reply leaves truncated arguments, as OpenAI's).
- False, for free replies (`tool_choice` "auto" in a native format): each call once it is complete and parses;
  a malformed call, and everything after it, is returned as plain content, never an exception.
The non-streamed reply is `tool_reply.fold_reply` over the same events, so both agree.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto

from .format import ToolFormat
from .json_scanner import JsonScanner
from .tool import arguments_text, new_call_id

_HEADER = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_ENVELOPE = re.compile(r'\{\s*"(content|tool_calls)"\s*:\s*')
_WHITESPACE = " \t\r\n"


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallDelta:
    """OpenAI's streamed tool call: `id` and `name` on a call's first delta, then `arguments` fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


Event = ContentDelta | CallDelta


class _State(Enum):
    TEXT = auto()  # content, watching for the start marker
    REGION = auto()  # after a marker (or at a JSON reply's start): a list or a call object comes
    NEXT_ITEM = auto()  # inside a list, after "[" or ",": an object or "]"
    OBJECT = auto()  # inside a call object
    AFTER_OBJECT = auto()  # a call object ended: a separator, the end marker, or the region's end
    ENVELOPE = auto()  # the generic reply's opening: {"content": or {"tool_calls":
    ANSWER = auto()  # the generic reply's content string
    ENVELOPE_END = auto()  # the closing brace of the generic reply
    PASSTHROUGH = auto()  # after a malformed call: everything is content
    DONE = auto()  # the generic reply ended: nothing more is read


class ToolCallParser:
    """Feed text deltas in order (`feed`), then `finish()`; each returns the events the text completed."""

    def __init__(self, fmt: ToolFormat, stream_arguments: bool = False, new_id: Callable[[], str] | None = None):
        self.fmt = fmt
        self.stream_arguments = stream_arguments
        self.new_id = new_id or (lambda: new_call_id(fmt.id_chars))
        self.calls = 0  # calls reported so far
        self._buf = ""
        self._pos = 0  # self._buf[:self._pos] is consumed
        self._state = _State.TEXT
        self._at_start = True  # nothing but whitespace seen yet
        self._after_call = False  # whitespace after a call is dropped, not content
        self._in_list = False
        self._region_start = 0  # where the current region's text began (returned as content if malformed)
        self._object: JsonScanner | None = None
        self._object_start = 0
        self._args: JsonScanner | None = None  # the streamed call's arguments value
        self._args_start = 0  # buffer position of the streamed arguments value
        self._args_sent = 0  # buffer position up to which arguments were sent
        self._pending: list[tuple[str, str]] = []  # free calls of this region, reported when it ends well
        self._answer_raw = 0  # the generic answer: buffer position of its undecoded rest

    def feed(self, text: str) -> list[Event]:
        self._buf += text
        events: list[Event] = []
        while self._advance(events, final=False):
            pass
        self._compact()
        return events

    def finish(self) -> list[Event]:
        """The end of the reply: release held text; an unfinished free call becomes content."""
        events: list[Event] = []
        while self._advance(events, final=True):
            pass
        if self._state is _State.TEXT:
            rest = self._buf[self._pos:]
            if rest and not (self._after_call and not rest.strip(_WHITESPACE)):
                events.append(ContentDelta(rest))
        elif self._state in (_State.REGION, _State.NEXT_ITEM, _State.OBJECT, _State.AFTER_OBJECT, _State.ENVELOPE):
            if not self.stream_arguments and self._state is not _State.AFTER_OBJECT:
                events.append(ContentDelta(self._buf[self._region_start:]))
        self._pos = len(self._buf)
        return events

    # One transition; True when it made progress.
    def _advance(self, events: list[Event], final: bool) -> bool:
        handler = {_State.TEXT: self._text, _State.REGION: self._region, _State.NEXT_ITEM: self._next_item,
                   _State.OBJECT: self._call_object, _State.AFTER_OBJECT: self._after_object,
                   _State.ENVELOPE: self._envelope, _State.ANSWER: self._answer,
                   _State.ENVELOPE_END: self._envelope_end}.get(self._state)
        if self._state is _State.PASSTHROUGH:
            return self._emit_content(events, len(self._buf))
        return handler(events, final) if handler else False

    def _text(self, events: list[Event], final: bool) -> bool:
        fmt, rest = self.fmt, self._buf[self._pos:]
        if self._at_start and fmt.json_at_start:
            stripped = rest.lstrip(_WHITESPACE)
            if not stripped:
                return False  # leading whitespace waits: the reply may still be JSON
            self._at_start = False
            if stripped.startswith("{"):
                self._region_start = self._pos
                self._pos += len(rest) - len(stripped)
                self._state = _State.ENVELOPE if fmt.envelope else _State.REGION
                return True
        if fmt.envelope or not fmt.start:
            return self._emit_content(events, len(self._buf))
        at = rest.find(fmt.start)
        if at >= 0:
            end = self._pos + at
            if self._after_call and not rest[:at].strip(_WHITESPACE):
                self._pos = end  # only whitespace between two calls
            self._emit_content(events, end)
            self._region_start = self._pos
            self._pos += len(fmt.start)
            self._state = _State.REGION
            return True
        return self._emit_content(events, len(self._buf) - _partial_marker(rest, fmt.start))

    def _emit_content(self, events: list[Event], end: int) -> bool:
        """Content up to `end`; after a call, whitespace waits (dropped if nothing but calls follows)."""
        text = self._buf[self._pos:end]
        if not text:
            return False
        if self._after_call:
            if not text.strip(_WHITESPACE):
                return False
            self._after_call = False
        if self._state is _State.TEXT and text.strip(_WHITESPACE):
            self._at_start = False
        events.append(ContentDelta(text))
        self._pos = end
        return True

    def _region(self, events: list[Event], final: bool) -> bool:
        if not self._skip_whitespace():
            return False
        char = self._buf[self._pos]
        if char == "[" and not self.fmt.end:
            self._in_list = True
            self._pos += 1
            self._state = _State.NEXT_ITEM
            return True
        if char == "{":
            self._in_list = False
            return self._open_object()
        return self._malformed(events)

    def _next_item(self, events: list[Event], final: bool) -> bool:
        if not self._skip_whitespace():
            return False
        char = self._buf[self._pos]
        if char == "{":
            return self._open_object()
        if char == "]" and (self.calls or self._pending):
            self._pos += 1
            return self._end_region(events)
        return self._malformed(events)

    def _open_object(self) -> bool:
        self._object = JsonScanner()
        self._object_start = self._pos
        self._args = None
        self._state = _State.OBJECT
        return True

    def _call_object(self, events: list[Event], final: bool) -> bool:
        start = self._object.position + self._object_start
        end = self._object.feed(self._buf, start)
        if self.stream_arguments:
            self._stream_call(events, end if end is not None else len(self._buf))
        if end is None:
            return False
        body = self._buf[self._object_start:end]
        self._pos = end
        self._state = _State.AFTER_OBJECT
        if self._args is not None:  # streamed: the arguments are out
            self.calls += 1
            return True
        call = _parse_call(body)
        if call is None:
            return self._malformed(events)
        self._pending.append(call)
        return True

    def _stream_call(self, events: list[Event], end: int) -> None:
        """The header once the name is complete, then the arguments text as it grows."""
        if self._args is None:
            header = _HEADER.match(self._buf, self._object_start, end)
            if header is None or header.end() == end:  # the value's first character decides where it starts
                return
            try:
                name = json.loads(header.group(1))
            except json.JSONDecodeError:
                return
            events.append(CallDelta(self.calls, self.new_id(), name))
            self._args = JsonScanner()
            self._args_start = self._args_sent = header.end()
        if self._args.done:
            return
        value_end = self._args.feed(self._buf, self._args_start + self._args.position, end)
        upto = value_end if value_end is not None else end
        if upto > self._args_sent:
            events.append(CallDelta(self.calls, arguments=self._buf[self._args_sent:upto]))
            self._args_sent = upto

    def _after_object(self, events: list[Event], final: bool) -> bool:
        fmt = self.fmt
        if not self._skip_whitespace():
            return self._end_region(events) if final else False  # a reply may end without the closing marker
        rest = self._buf[self._pos:]
        if self._in_list:
            if rest[0] == ",":
                self._pos += 1
                self._state = _State.NEXT_ITEM
                return True
            if rest[0] == "]":
                self._pos += 1
                return self._end_region(events)
            return self._malformed(events)
        if fmt.end:
            if rest.startswith(fmt.end):
                self._pos += len(fmt.end)
                return self._end_region(events)
            if fmt.end.startswith(rest) and not final:
                return False
            return self._malformed(events)
        if fmt.call_separator and rest[0] == fmt.call_separator:
            self._pos += 1
            self._state = _State.REGION
            return True
        return self._end_region(events)

    def _end_region(self, events: list[Event]) -> bool:
        for name, arguments in self._pending:
            events.append(CallDelta(self.calls, self.new_id(), name))
            events.append(CallDelta(self.calls, arguments=arguments))
            self.calls += 1
        self._pending.clear()
        self._state = _State.ENVELOPE_END if self.fmt.envelope else _State.TEXT
        self._after_call = True
        return True

    def _malformed(self, events: list[Event]) -> bool:
        """A call that does not parse: its text and everything after it are content."""
        self._pos = self._region_start
        self._pending.clear()
        self._after_call = False
        self._state = _State.PASSTHROUGH
        return True

    def _envelope(self, events: list[Event], final: bool) -> bool:
        opening = _ENVELOPE.match(self._buf, self._pos)
        if opening is None:
            if ":" in self._buf[self._pos:] or final:
                return self._malformed(events)
            return False
        self._pos = opening.end()
        if opening.group(1) == "tool_calls":
            self._state = _State.REGION
            return True
        if not self._skip_whitespace():
            self._state = _State.ENVELOPE  # wait for the string's quote
            self._pos = opening.start()
            return False
        if self._buf[self._pos] != '"':
            self._pos = opening.start()
            return self._malformed(events)
        self._pos += 1
        self._state = _State.ANSWER
        return True

    def _answer(self, events: list[Event], final: bool) -> bool:
        """The generic answer's JSON string, decoded as it arrives (an escape waits until it is complete)."""
        raw, closed = _string_body(self._buf, self._pos)
        if not raw and not closed:
            return False
        try:
            text = json.loads(f'"{raw}"')
        except json.JSONDecodeError:
            return self._malformed(events)
        if text:
            events.append(ContentDelta(text))
        self._pos += len(raw) + (1 if closed else 0)
        if closed:
            self._state = _State.ENVELOPE_END
        return bool(raw) or closed

    def _envelope_end(self, events: list[Event], final: bool) -> bool:
        if not self._skip_whitespace():
            return False
        self._state = _State.DONE  # the closing brace and anything after it are not content
        self._pos = len(self._buf)
        return True

    def _skip_whitespace(self) -> bool:
        """Move past whitespace; True if a non-space character follows."""
        while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
            self._pos += 1
        return self._pos < len(self._buf)

    def _compact(self) -> None:
        """Drop consumed text that no later step can look back at."""
        keep = self._pos
        if self._state is not _State.TEXT and self._state is not _State.PASSTHROUGH:
            keep = min(keep, self._region_start, self._object_start if self._object else keep)
        if keep > 4096:
            self._buf = self._buf[keep:]
            self._pos -= keep
            self._region_start -= keep
            self._object_start -= keep
            if self._args is not None:
                self._args_start -= keep
                self._args_sent -= keep


def _partial_marker(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker` (held back: it may be markup)."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def _parse_call(body: str) -> tuple[str, str] | None:
    """(name, arguments JSON text) of a complete call object, or None if it is not a call."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            if not isinstance(json.loads(arguments), dict):
                return None
        except json.JSONDecodeError:
            return None
    elif not isinstance(arguments, dict):
        return None
    return call["name"], arguments_text(arguments)


def _string_body(buf: str, start: int) -> tuple[str, bool]:
    """The decodable raw text of a JSON string from `start` (no cut escape), and whether its quote closed it."""
    i, n = start, len(buf)
    while i < n:
        char = buf[i]
        if char == '"':
            return buf[start:i], True
        if char == "\\":
            if i + 1 >= n:
                break
            if buf[i + 1] == "u":
                if i + 6 > n:
                    break
                code = int(buf[i + 2:i + 6], 16) if _is_hex(buf[i + 2:i + 6]) else -1
                if 0xD800 <= code < 0xDC00:  # a high surrogate waits for its low half
                    if i + 12 > n:
                        break
                    i += 12
                    continue
                i += 6
                continue
            i += 2
            continue
        i += 1
    return buf[start:i], False


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)
