"""The sampling fields a request can set, each declared once: what every door derives its version from.

A row names a `SamplingParams` attribute (its type and default live there) and says what the doors need:
the JSON value's kind, its bounds, the OpenAI endpoints whose bodies take it, whether the command line has a
flag for it, and a short note. From the rows come `LIMITS` (checked by SamplingParams), the server's pydantic
fields (server/schemas.py), the field-policy rows (llm_runtime.openai.fields), the one request mapping's field
list (llm_runtime.openai.request, server/response_request.py), the CLI flags (llm_runtime.cli.sampling_args)
and docs/request-fields.md (llm_runtime.cli.field_docs). Batch lines are chat and completions bodies.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Limit:
    """The allowed range of a numeric field: lo <= value (lo < value when `lo_open`) <= hi."""

    lo: float
    hi: float | None = None
    lo_open: bool = False

    def __str__(self) -> str:
        lo, hi = _number(self.lo), None if self.hi is None else _number(self.hi)
        if hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        return f"({lo}, {hi}]" if self.lo_open else f"{lo}..{hi}"


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class Kind(Enum):
    """The JSON value of a field; its name in the docs."""

    INT = "integer"
    REAL = "number"
    BOOL = "boolean"
    TEXT = "string"
    STRINGS = "string or list of strings"  # `limit`: each string's length
    TOKEN_IDS = "list of token ids"  # `limit`: each id
    TOKEN_BIAS = "object: token id -> number"  # `limit`: each value
    PREDICTION = "object: {type: content, content: string or text parts}"  # SamplingParams holds the text


CHAT, COMPLETIONS, RESPONSES = "chat", "completions", "responses"
CHAT_AND_COMPLETIONS = (CHAT, COMPLETIONS)  # and so batch lines, which are such bodies
EVERY = (CHAT, COMPLETIONS, RESPONSES)


@dataclass(frozen=True)
class RequestField:
    """One sampling field, named alike in a request body, `SamplingParams` and the CLI (`--top-p` is top_p).

    `note` may name `{range}` (the limit), `{default}` (SamplingParams' default), `{items}` and
    `{DEFAULT_MAX_TOKENS}`. `items` caps the entries of a list or object at the HTTP door: OpenAI's limits, which
    the Python API, the CLI and batch lines need not share (SamplingParams takes any number of stop strings).
    """

    name: str
    kind: Kind
    note: str
    limit: Limit | None = None
    endpoints: tuple[str, ...] = EVERY
    flag: bool = False  # the generating commands take --name-with-dashes
    extension: bool = False  # not an OpenAI field: named as vLLM names it
    items: int | None = None


MAX_LOGIT_BIAS = 300  # entries in logit_bias: OpenAI's limit, which SamplingParams keeps too

REQUEST_FIELDS = (
    RequestField("max_tokens", Kind.INT, "left out: min({DEFAULT_MAX_TOKENS}, the context left after the prompt)",
                 Limit(1), CHAT_AND_COMPLETIONS, flag=True),
    RequestField("min_tokens", Kind.INT, "stop tokens are suppressed until this many are generated", Limit(0),
                 flag=True, extension=True),
    RequestField("temperature", Kind.REAL, "{range}, default {default}; 0 is greedy", Limit(0.0, 2.0), flag=True),
    RequestField("top_k", Kind.INT, "{default} is off", Limit(0), flag=True, extension=True),
    RequestField("top_p", Kind.REAL, "{range}, {default} is off; the most likely tokens whose probabilities sum to it",
                 Limit(0.0, 1.0, lo_open=True), flag=True),
    RequestField("min_p", Kind.REAL, "{range}, {default} is off", Limit(0.0, 1.0), flag=True, extension=True),
    RequestField("typical_p", Kind.REAL, "{range}, {default} is off; locally typical sampling: the tokens whose "
                 "surprisal is nearest the entropy, summing to it", Limit(0.0, 1.0, lo_open=True), flag=True,
                 extension=True),
    # a penalty near 0 (or huge) pushes logits to inf and the distribution to NaN
    RequestField("repetition_penalty", Kind.REAL, "{range}, {default} is off (transformers' rule, prompt and output)",
                 Limit(0.01, 10.0), flag=True, extension=True),
    RequestField("presence_penalty", Kind.REAL, "{range}, over generated tokens", Limit(-2.0, 2.0), flag=True),
    RequestField("frequency_penalty", Kind.REAL, "{range}, over generated tokens", Limit(-2.0, 2.0), flag=True),
    RequestField("logit_bias", Kind.TOKEN_BIAS, "token id -> {range}, up to {items} entries", Limit(-100.0, 100.0),
                 CHAT_AND_COMPLETIONS, items=MAX_LOGIT_BIAS),
    RequestField("seed", Kind.INT, "choice i of n uses seed + i", Limit(-(2**63), 2**63 - 1), flag=True),
    RequestField("stop", Kind.STRINGS, "a string or up to {items} strings (the HTTP API's limit)", Limit(1, 256),
                 flag=True, items=4),
    RequestField("stop_token_ids", Kind.TOKEN_IDS, "token ids that end a choice, like EOS; up to {items}", Limit(0),
                 extension=True, items=256),
    RequestField("ignore_eos", Kind.BOOL, "generate max_tokens tokens whatever the model says", flag=True,
                 extension=True),
    RequestField("logprobs", Kind.BOOL, "true: the chosen tokens' logprobs", endpoints=(CHAT,)),
    RequestField("top_logprobs", Kind.INT, "{range} alternatives per token; needs logprobs", Limit(0, 20), (CHAT,)),
    RequestField("n", Kind.INT, "choices per prompt, {range}", Limit(1, 16), CHAT_AND_COMPLETIONS),
    RequestField("regex", Kind.TEXT, "a regular expression the whole reply matches", None, CHAT_AND_COMPLETIONS,
                 extension=True),
    RequestField("grammar", Kind.TEXT, "a Lark grammar (llguidance's dialect) the reply matches", None,
                 CHAT_AND_COMPLETIONS, extension=True),
    RequestField("prediction", Kind.PREDICTION, "Predicted Outputs: text the reply is expected to repeat (a file "
                 "being edited); drafts verified like any, so the reply is the same, sooner; not with n > 1, tools, "
                 "logprobs or penalties > 0 (OpenAI's limits); the Python API takes the text", None, (CHAT,)),
)

# field -> range (of each entry, for lists and objects): SamplingParams checks these, the server's models declare them
LIMITS = {f.name: f.limit for f in REQUEST_FIELDS if f.limit is not None}
