"""Prometheus text exposition of the server's and the engine's counters, written by hand."""
from __future__ import annotations

import bisect
import threading

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Cumulative buckets in seconds, as Prometheus expects."""

    def __init__(self):
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, v)] += 1
        self.total += v
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, acc = [f"# TYPE {name} histogram"], 0
        for b, c in zip(BUCKETS, self.counts):
            acc += c
            out.append(f'{name}_bucket{{le="{b}"}} {acc}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total}", f"{name}_count {self.n}"]
        return out


class Metrics:
    """Server counters and latency histograms; the engine's gauges are read at scrape time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.ttft, self.itl = Histogram(), Histogram()

    def request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, status)] = self.requests.get((endpoint, status), 0) + 1

    def token_times(self, seconds: float, first: bool, count: int) -> None:
        """A chunk of `count` tokens arrived `seconds` after the request (first) or the previous chunk."""
        if count:
            with self.lock:
                (self.ttft if first else self.itl).observe(seconds)

    def render(self, engines: dict, names: list[str], adapters: dict[str, int] | None = None) -> str:
        """The text of a scrape. `engines`: served name -> EngineStats of each loaded model; `names`: every served
        name; `adapters`: served name -> LoRA adapters loaded, of each loaded model that serves them. One model's
        engine lines carry no label (as before several models); with several, `model="name"`."""
        lines = ["# TYPE llm_requests_total counter"]
        with self.lock:
            lines += [f'llm_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            lines += self.ttft.lines("llm_time_to_first_token_seconds")
            lines += self.itl.lines("llm_inter_token_latency_seconds")
        lines += ["# TYPE llm_model_loaded gauge"] + [f'llm_model_loaded{{model="{n}"}} {int(n in engines)}'
                                                       for n in names]
        if adapters:
            lines += ["# TYPE llm_lora_adapters_loaded gauge"] + [f'llm_lora_adapters_loaded{{model="{n}"}} {k}'
                                                                   for n, k in adapters.items()]
        rows = [(f'{{model="{n}"}}' if len(names) > 1 else "", engines[n]) for n in names if n in engines]
        if rows:  # none while the only model loads
            for kind, values in (("gauge", _gauges), ("counter", _counters)):
                for name in values(rows[0][1]):
                    lines += [f"# TYPE {name} {kind}"] + [f"{name}{label} {values(s)[name]}" for label, s in rows]
            for i, name in ((1, "llm_speculative_source_draft_tokens_total"),
                            (2, "llm_speculative_source_accepted_tokens_total")):
                lines += [f"# TYPE {name} counter"]
                lines += [f'{name}{_with(label, "source", source[0])} {source[i]}'
                          for label, s in rows for source in s.draft_sources]
        return "\n".join(lines) + "\n"


def _with(label: str, name: str, value: str) -> str:
    """A series' label set with one more label."""
    return f'{label[:-1]},{name}="{value}"}}' if label else f'{{{name}="{value}"}}'


def _gauges(stats) -> dict:
    return {"llm_running_sequences": stats.running, "llm_waiting_sequences": stats.waiting,
            "llm_cache_bytes": stats.cache_bytes, "llm_cache_used_tokens": stats.cache_used_tokens,
            "llm_speculative_acceptance_rate": stats.accepted_tokens / max(stats.draft_tokens, 1),
            "llm_suffix_cache_bytes": stats.suffix_cache_bytes, "llm_suffix_cache_sequences": stats.suffix_cache_sequences}


def _counters(stats) -> dict:
    return {"llm_prompt_tokens_total": stats.prompt_tokens,
            "llm_prompt_tokens_reused_total": stats.reused_prompt_tokens,
            "llm_generation_tokens_total": stats.generated_tokens, "llm_engine_steps_total": stats.steps,
            "llm_speculative_draft_tokens_total": stats.draft_tokens,
            "llm_speculative_accepted_tokens_total": stats.accepted_tokens,
            "llm_speculative_verifications_total": stats.verifications}
