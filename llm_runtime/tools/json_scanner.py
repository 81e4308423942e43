"""Finds where a JSON value ends in text that arrives in pieces: bracket depth outside strings, nothing more
(the value is parsed with `json` once it is complete)."""
from __future__ import annotations


class JsonScanner:
    """Scans one JSON value from its first character. `feed` continues where the last call stopped."""

    def __init__(self):
        self.position = 0  # characters of the value scanned so far
        self.done = False
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._scalar = False  # a bare number, true, false or null

    def feed(self, text: str, start: int, end: int | None = None) -> int | None:
        """Scan text[start:end], which must continue the value (start = its first index + self.position).
        Returns the index just past the value's end once it is complete, else None."""
        end = len(text) if end is None else end
        i = start
        while i < end and not self.done:
            char = text[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
                    self.done = self._depth == 0
            elif self._scalar:
                if char in ",]} \t\r\n":
                    self.done = True
                    break  # the scalar ended just before this character
            elif char in " \t\r\n":
                pass  # between tokens (or before the value)
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                self.done = self._depth <= 0
            elif self._depth == 0:
                self._scalar = True
            i += 1
            self.position += 1
        return i if self.done else None
