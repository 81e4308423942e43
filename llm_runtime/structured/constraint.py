"""Constraints on a reply (a JSON schema, a regex, a Lark grammar, any JSON object), compiled with llguidance.

A `Constraint` is the text the user gave plus its kind; `GrammarCompiler` turns it into an llguidance matcher
for one model's tokenizer, once per distinct constraint (an LRU cache keyed by kind and text): each request
gets a deep copy of the cached, already-compiled matcher. What llguidance cannot compile (an unsupported
schema keyword, a bad regex, a Lark syntax error) is a `ParameterError` naming the field and the reason.
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

import llguidance as llg

from llm_runtime.errors import ParameterError

KINDS = ("json_schema", "json_object", "regex", "grammar")
# Compact JSON with json.dumps' separators: what chat templates print and models learned, and no runs of
# whitespace for a small model to loop in. A schema's own "x-guidance" options take precedence.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CACHE_SIZE = 64


@dataclass(frozen=True)
class Constraint:
    """What the reply must match. `kind`: one of KINDS; `text`: a JSON schema (as JSON text), a regex or a
    Lark grammar (llguidance's dialect, which also embeds `%json {schema}`); `param`: the request field it came
    from, named in errors."""

    kind: str
    text: str
    param: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ParameterError(self.param or "constraint", f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not isinstance(self.text, str):
            raise ParameterError(self.param or self.kind, f"must be a string, got {type(self.text).__name__}")
        if not self.param:
            object.__setattr__(self, "param", self.kind)

    @classmethod
    def json_schema(cls, schema: dict | str, param: str = "json_schema") -> Constraint:
        """A JSON schema given as a dict or as JSON text."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as e:
                raise ParameterError(param, f"is not valid JSON: {e}") from None
        if not isinstance(schema, dict):
            raise ParameterError(param, f"must be a JSON schema object, got {type(schema).__name__}")
        return cls("json_schema", json.dumps(schema, ensure_ascii=False), param)

    @classmethod
    def json_object(cls, param: str = "json_object") -> Constraint:
        """Any JSON object."""
        return cls("json_object", '{"type": "object"}', param)

    def grammar_text(self) -> str:
        """llguidance's grammar for this constraint (not yet checked)."""
        try:
            if self.kind in ("json_schema", "json_object"):
                return llg.LLMatcher.grammar_from_json_schema(self.text, defaults=JSON_OPTIONS)
            if self.kind == "regex":
                return llg.LLMatcher.grammar_from_regex(self.text)
            return llg.LLMatcher.grammar_from_lark(self.text)
        except ValueError as e:
            raise ParameterError(self.param, f"cannot be compiled: {e}") from None


class GrammarCompiler:
    """Compiles constraints against one tokenizer. Thread-safe; `matcher()` is what a request calls."""

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_ids: list[int], cache_size: int = CACHE_SIZE):
        # vocab_size: the logits' width, which may exceed the tokenizer's (padded embeddings)
        self.tokenizer = llg.LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=list(eos_ids) or None)
        self.vocab_size = vocab_size
        self.cache_size = cache_size
        self._compiled: OrderedDict[tuple[str, str], llg.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self.compiles = 0  # distinct constraints compiled (cache misses)

    def compile(self, constraint: Constraint) -> llg.LLMatcher:
        """The pristine compiled matcher for `constraint` (cached); raises ParameterError with the reason."""
        key = (constraint.kind, constraint.text)
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
        grammar = constraint.grammar_text()
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            raise ParameterError(constraint.param, f"cannot be enforced: {_first_line(messages[0])}")
        matcher = llg.LLMatcher(self.tokenizer, grammar, log_level=0)  # releases the GIL while it compiles
        if matcher.is_error():
            raise ParameterError(constraint.param, f"cannot be enforced: {_first_line(matcher.get_error())}")
        with self._lock:
            self.compiles += 1
            self._compiled[key] = matcher
            while len(self._compiled) > self.cache_size:
                self._compiled.popitem(last=False)
        return matcher

    def matcher(self, constraint: Constraint) -> llg.LLMatcher:
        """A fresh matcher in the start state for one request (a deep copy of the compiled one)."""
        return self.compile(constraint).deep_copy()


def _first_line(message: str) -> str:
    """llguidance's reason without the grammar excerpt it appends (a regex error keeps its caret lines)."""
    message = message.strip()
    return message.split("\n   1 | ")[0].strip() if "\n   1 | " in message else message
