"""Perplexity over sliding windows, and KL divergence against a reference model: how good a build is, in numbers
(llama.cpp's `llama-perplexity` and its `--kl-divergence` mode).

Windows of `context` tokens start every `stride` tokens (at most context - 1, so consecutive windows share a
token); each scores only the tokens no earlier window scored (the first window all but its first token), so
every token but the text's first is scored exactly once, and with stride < context every scored token after the
first window sees at least context - stride tokens before it. The last window ends at the text's end.
`llama_cpp_windows` are llama.cpp's instead (`llama-perplexity`): whole chunks of `context` tokens, the text's
tail dropped, each chunk scoring only its second half, so its figures and ours count the same tokens.
The logits of every position come from one graph call per window
through the graph's `logits_indices` input (folders without it, onnxruntime-genai's, return every position anyway).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llm_runtime.graph.providers import CAPABILITIES, resolve
from llm_runtime.graph.runner import ModelRunner, Step
from llm_runtime.graph.session import SessionConfig, make_session
from llm_runtime.kv_cache import KVCache
from llm_runtime.models.folder import ModelFolder
from llm_runtime.models.resolver import resolve_model

ROWS = 64  # positions per chunk when reducing [positions, vocab] logits (bounded float64 temporaries)


@dataclass(frozen=True)
class Window:
    begin: int  # first token of the window
    end: int  # one past its last token
    scored: int  # first position whose token is scored (predicted from the positions before it)


def windows(n_tokens: int, context: int, stride: int) -> list[Window]:
    """Windows over n_tokens tokens (module docstring); every token but the first is scored exactly once."""
    if context < 2 or not 1 <= stride <= context:
        raise ValueError(f"need context >= 2 and 1 <= stride <= context, got context {context}, stride {stride}")
    if n_tokens < 2:
        raise ValueError(f"the text has {n_tokens} token(s): at least 2 are needed")
    out, done = [], 1  # done: tokens [0, done) are scored or are the first token
    begin = 0
    while done < n_tokens:
        end = min(begin + context, n_tokens)
        out.append(Window(begin, end, done))
        done = end
        # the next window starts `stride` later, but at the latest on the last token scored (it must see one
        # token before its first scored one), and no later than a full window before the end
        begin = min(begin + stride, done - 1, max(n_tokens - context, 0))
    return out


def llama_cpp_windows(n_tokens: int, context: int) -> list[Window]:
    """llama-perplexity's chunks: [k * context, (k + 1) * context) for every whole chunk; the logits from position
    context / 2 on are scored (tokens context / 2 + 1 .. context - 1 of each chunk)."""
    if context < 4:
        raise ValueError(f"llama.cpp's windows need context >= 4, got {context}")
    if n_tokens < context:
        raise ValueError(f"the text has {n_tokens} tokens: llama.cpp's windows need at least one chunk of {context}")
    return [Window(b, b + context, b + context // 2 + 1) for b in range(0, n_tokens - context + 1, context)]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float [.., V] -> float64 log-probabilities."""
    x = logits.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """logits [n, V], targets int [n] -> negative log-likelihood of each target, float64 [n]."""
    return -np.take_along_axis(log_softmax(logits), targets[:, None], axis=-1)[:, 0]


def kl_divergence(ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(P_ref || P) per position: [n, V] twice -> float64 [n]."""
    lp, lq = log_softmax(ref_logits), log_softmax(logits)
    return (np.exp(lp) * (lp - lq)).sum(-1)


@dataclass
class Scores:
    """Per scored token: negative log-likelihood, and against a reference: its NLL, KL and top-1 agreement."""

    nll: list[np.ndarray] = field(default_factory=list)
    ref_nll: list[np.ndarray] = field(default_factory=list)
    kl: list[np.ndarray] = field(default_factory=list)
    same_top1: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: np.ndarray, targets: np.ndarray, ref_logits: np.ndarray | None) -> None:
        for a in range(0, len(targets), ROWS):
            rows, t = logits[a:a + ROWS], targets[a:a + ROWS]
            self.nll.append(token_nll(rows, t))
            if ref_logits is not None:
                ref = ref_logits[a:a + ROWS]
                self.ref_nll.append(token_nll(ref, t))
                self.kl.append(kl_divergence(ref, rows))
                self.same_top1.append(ref.argmax(-1) == rows.argmax(-1))


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


@dataclass(frozen=True)
class Report:
    tokens: int  # tokens scored
    perplexity: float
    perplexity_se: float  # standard error (delta method: ppl * se of the mean NLL)
    ref_perplexity: float | None = None
    kl_mean: float | None = None
    kl_se: float | None = None
    kl_p99: float | None = None
    top1: float | None = None  # fraction of positions where both models' most likely token agree
    ratio: float | None = None  # perplexity / the reference's, on the same tokens: exp(mean(nll - ref_nll))
    ratio_se: float | None = None  # its standard error (delta method on the paired differences)

    @classmethod
    def of(cls, s: Scores) -> "Report":
        nll, se = _mean_se(np.concatenate(s.nll))
        ppl = math.exp(nll)
        if not s.kl:
            return cls(len(np.concatenate(s.nll)), ppl, ppl * se)
        kl, ref_nll = np.concatenate(s.kl), np.concatenate(s.ref_nll)
        kl_mean, kl_se = _mean_se(kl)
        gap, gap_se = _mean_se(np.concatenate(s.nll) - ref_nll)
        return cls(len(kl), ppl, ppl * se, math.exp(ref_nll.mean()), kl_mean, kl_se, float(np.percentile(kl, 99)),
                   float(np.concatenate(s.same_top1).mean()), math.exp(gap), math.exp(gap) * gap_se)

    def lines(self) -> list[str]:
        out = [f"tokens scored: {self.tokens}", f"perplexity: {self.perplexity:.4f} +/- {self.perplexity_se:.4f}"]
        if self.kl_mean is not None:
            out += [f"reference perplexity: {self.ref_perplexity:.4f}",
                    f"perplexity / reference: {self.ratio:.6f} +/- {self.ratio_se:.6f}",
                    f"KL divergence: mean {self.kl_mean:.6f} +/- {self.kl_se:.6f}, 99th percentile {self.kl_p99:.6f}",
                    f"top-1 agreement: {100 * self.top1:.2f}%"]
        return out


class LogitsModel:
    """A built model (any folder the runtime loads) that returns the logits of every position of a token run."""

    def __init__(self, model: str | Path, provider: str = "cpu", threads: int = 0, progress: bool = True):
        self.provider = resolve(provider)
        cap = CAPABILITIES[self.provider]
        self.folder = ModelFolder.open(resolve_model(model, cap.build_provider, progress=progress))
        self.runner = ModelRunner(self.folder, make_session(self.folder.model_file, self.provider,
                                                            SessionConfig(threads)))
        c = self.folder.contract
        self.cache = KVCache(c.num_layers, c.num_kv_heads, c.head_dim, np.dtype(c.kv_dtype), slots=1, capacity=256,
                             device=cap.cache_device, max_capacity=self.folder.context_length,
                             windows=dict(c.window_cache))

    def tokenize(self, text: str) -> list[int]:
        return self.folder.tokenizer.encode(text, add_special_tokens=False).ids

    def logits(self, ids: list[int]) -> np.ndarray:
        """ids [S] -> float32 [S, vocab]: position i's logits predict token i + 1; the cache starts empty."""
        n = len(ids)
        if n > self.folder.context_length:
            raise ValueError(f"a window of {n} tokens is longer than the model's context "
                             f"({self.folder.context_length})")
        step = Step(np.asarray([ids], np.int64), np.array([n]), np.array([n]), np.arange(n))
        return self.runner.run(step, self.cache).copy()


def evaluate(model: LogitsModel, tokens: list[int], spans: list[Window],
             reference: LogitsModel | None = None, progress: bool = True) -> Report:
    """Perplexity of `model` over `tokens` in these windows (and KL divergence from `reference`, which sees the
    same windows)."""
    scores = Scores()
    for w in tqdm(spans, desc="perplexity", unit="window", disable=not progress):
        ids = tokens[w.begin:w.end]
        first = w.scored - w.begin - 1  # the position that predicts token w.scored
        targets = np.asarray(ids[first + 1:], np.int64)
        logits = model.logits(ids)[first:-1]
        ref = reference.logits(ids)[first:-1] if reference is not None else None
        scores.add(logits, targets, ref)
    return Report.of(scores)
