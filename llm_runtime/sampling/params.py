"""Per-request sampling settings, validated once when built; bad values raise `ParameterError`.

Defaults live here, on the attributes; each field a request can set is declared once, with its bounds, in
`llm_runtime.sampling.fields`, and every door (API, CLI, server, batch) derives its version from the two.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from llm_runtime.errors import ParameterError

from .fields import LIMITS, MAX_LOGIT_BIAS, REQUEST_FIELDS, Kind

if TYPE_CHECKING:
    from llm_runtime.structured.constraint import Constraint

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default, at every door; the CLI's --temperature flag says its own (0: greedy)
DEFAULT_MAX_TOKENS = 1024  # max_tokens left out: this many, capped by the context left after the prompt
MAX_PROMPTS = 128  # completions: prompts in one request times n


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. `temperature == 0` (or `top_k == 1`) means greedy argmax."""

    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS, capped by the context left (`fit_to_context`)
    min_tokens: int = 0  # stop tokens (EOS, stop_token_ids) are suppressed until this many are generated
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    typical_p: float = 1.0  # 1: off
    repetition_penalty: float = 1.0  # transformers' rule, over prompt and generated tokens; 1: off
    presence_penalty: float = 0.0  # OpenAI's rule, over generated tokens only
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit
    seed: int | None = None  # None: fresh entropy per request
    stop: tuple[str, ...] = ()  # a str or a list is accepted and becomes a tuple
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives reported per token; needs logprobs
    n: int = 1
    # structured output: at most one of these; compiled when the request is submitted (llm_runtime.structured)
    json_schema: dict | str | None = None  # a JSON schema (a dict or JSON text) the reply must match
    regex: str | None = None  # a regular expression the whole reply must match
    grammar: str | None = None  # a Lark grammar (llguidance's dialect) the reply must match
    json_object: bool = False  # the reply is any JSON object
    prediction: str | None = None  # a predicted output: a draft source, tokenized when the request is submitted
    skip_special_tokens: bool = True  # special tokens are left out of the text (tool-call markers need them)
    adapter: str | None = None  # the name of a loaded LoRA adapter to generate with (LLM.load_adapter); None: the base
    constraint: Constraint | None = field(default=None, repr=False)  # built from the fields above, or given whole

    def __post_init__(self):
        for f in REQUEST_FIELDS:  # in declaration order: the first bad field is the one reported
            value = getattr(self, f.name)
            if f.kind in _CHECKS and (value is not None or _DEFAULTS[f.name] is not None):
                _CHECKS[f.kind](f.name, value)
        if self.min_tokens > (self.max_tokens or DEFAULT_MAX_TOKENS):
            raise ParameterError("min_tokens", f"must be <= max_tokens, got {self.min_tokens}")
        object.__setattr__(self, "logit_bias", _logit_bias(self.logit_bias))
        object.__setattr__(self, "stop", _stop_strings(self.stop))
        object.__setattr__(self, "stop_token_ids", _token_ids("stop_token_ids", self.stop_token_ids))
        if self.top_logprobs and not self.logprobs:
            raise ParameterError("top_logprobs", "requires logprobs to be true")
        _bool("json_object", self.json_object)
        if self.prediction is not None and not isinstance(self.prediction, str):
            raise ParameterError("prediction", f"must be a string, got {type(self.prediction).__name__}")
        _bool("skip_special_tokens", self.skip_special_tokens)
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.adapter):
            raise ParameterError("adapter", f"must be an adapter's name, got {self.adapter!r}")
        object.__setattr__(self, "constraint", _constraint(self))

    @property
    def constrained(self) -> bool:
        return self.constraint is not None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def check_vocab(self, vocab_size: int) -> None:
        """Raise `ParameterError` if a token id in logit_bias or stop_token_ids is outside the vocabulary."""
        for name, ids in (("logit_bias", self.logit_bias or ()), ("stop_token_ids", self.stop_token_ids)):
            bad = [t for t in ids if t >= vocab_size]
            if bad:
                raise ParameterError(name, f"token id {bad[0]} is outside the vocabulary of {vocab_size}")


def _constraint(params: SamplingParams):
    """The one Constraint the structured-output fields ask for, or None."""
    from llm_runtime.structured.constraint import Constraint

    asked = [name for name in ("json_schema", "regex", "grammar") if getattr(params, name) is not None]
    asked += ["json_object"] if params.json_object else []
    given = params.constraint
    if given is not None and not isinstance(given, Constraint):
        raise ParameterError("constraint", f"must be a Constraint, got {type(given).__name__}")
    if len(asked) > 1:
        raise ParameterError(asked[1], f"cannot be combined with {asked[0]}: give one constraint")
    if not asked:
        return given
    if asked[0] == "json_schema":
        built = Constraint.json_schema(params.json_schema)
    elif asked[0] == "json_object":
        built = Constraint.json_object()
    else:
        built = Constraint(asked[0], getattr(params, asked[0]))
    if given is not None and given != built:  # dataclasses.replace hands the built one back: that is fine
        raise ParameterError(asked[0], f"cannot be combined with another constraint ({given.param})")
    return built


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_in(name: str, value) -> None:
    """An integer within LIMITS[name]."""
    limit = LIMITS[name]
    if not _is_int(value):
        raise ParameterError(name, f"must be an integer, got {value!r}")
    if value < limit.lo:
        raise ParameterError(name, f"must be >= {limit.lo}, got {value}")
    if limit.hi is not None and value > limit.hi:
        raise ParameterError(name, f"must be <= {limit.hi}, got {value}")


def _real_in(name: str, value) -> None:
    """A finite number within LIMITS[name]."""
    limit = LIMITS[name]
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ParameterError(name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ParameterError(name, f"must be finite, got {value}")
    if value < limit.lo or (limit.lo_open and value == limit.lo):
        raise ParameterError(name, f"must be {'>' if limit.lo_open else '>='} {limit.lo:g}, got {value}")
    if limit.hi is not None and value > limit.hi:
        raise ParameterError(name, f"must be <= {limit.hi:g}, got {value}")


def _bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ParameterError(name, f"must be true or false, got {value!r}")


def _logit_bias(bias) -> dict[int, float] | None:
    """A fresh {int id: float} dict; decimal string keys (JSON object keys) are accepted."""
    if bias is None:
        return None
    if not isinstance(bias, dict):
        raise ParameterError("logit_bias", f"must be a mapping of token id to bias, got {type(bias).__name__}")
    if len(bias) > MAX_LOGIT_BIAS:
        raise ParameterError("logit_bias", f"may hold at most {MAX_LOGIT_BIAS} entries, got {len(bias)}")
    lo, hi = LIMITS["logit_bias"].lo, LIMITS["logit_bias"].hi
    out: dict[int, float] = {}
    for key, value in bias.items():
        token = int(key) if isinstance(key, str) and key.strip().isdecimal() else key
        if not _is_int(token) or token < 0:
            raise ParameterError("logit_bias", f"keys must be token ids >= 0, got {key!r}")
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not lo <= value <= hi:
            raise ParameterError("logit_bias", f"values must be in [{lo:g}, {hi:g}], got {value!r} for token {key!r}")
        out[int(token)] = float(value)
    return out


def _stop_strings(stop) -> tuple[str, ...]:
    stops = (stop,) if isinstance(stop, str) else stop
    if stops is None:
        return ()
    if not isinstance(stops, (list, tuple)):
        raise ParameterError("stop", f"must be a string or a list of strings, got {type(stop).__name__}")
    lo, hi = LIMITS["stop"].lo, LIMITS["stop"].hi  # characters per string; any number of strings
    for s in stops:
        if not isinstance(s, str) or not lo <= len(s) <= hi:
            raise ParameterError("stop", f"strings must hold {lo} to {hi} characters, got {s!r}")
    return tuple(stops)


def _token_ids(name: str, ids) -> tuple[int, ...]:
    if not isinstance(ids, (list, tuple)):
        raise ParameterError(name, f"must be a list of token ids, got {type(ids).__name__}")
    for t in ids:
        if not _is_int(t) or t < 0:
            raise ParameterError(name, f"must hold token ids >= 0, got {t!r}")
    return tuple(int(t) for t in ids)


_CHECKS = {Kind.INT: _int_in, Kind.REAL: _real_in, Kind.BOOL: _bool}  # the other kinds are checked apart
_DEFAULTS = {f.name: f.default for f in fields(SamplingParams)}  # a field whose default is None may be None
