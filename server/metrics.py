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

    def render(self, stats) -> str:
        lines = ["# TYPE llm_requests_total counter"]
        with self.lock:
            lines += [f'llm_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            lines += self.ttft.lines("llm_time_to_first_token_seconds")
            lines += self.itl.lines("llm_inter_token_latency_seconds")
        if stats is not None:  # None while the model loads
            gauges = {"llm_running_sequences": stats.running, "llm_waiting_sequences": stats.waiting,
                      "llm_cache_bytes": stats.cache_bytes, "llm_cache_used_tokens": stats.cache_used_tokens}
            counters = {"llm_prompt_tokens_total": stats.prompt_tokens,
                        "llm_prompt_tokens_reused_total": stats.reused_prompt_tokens,
                        "llm_generation_tokens_total": stats.generated_tokens, "llm_engine_steps_total": stats.steps,
                        "llm_speculative_draft_tokens_total": stats.draft_tokens,
                        "llm_speculative_accepted_tokens_total": stats.accepted_tokens,
                        "llm_speculative_verifications_total": stats.verifications}
            gauges["llm_speculative_acceptance_rate"] = stats.accepted_tokens / max(stats.draft_tokens, 1)
            lines += [x for k, v in gauges.items() for x in (f"# TYPE {k} gauge", f"{k} {v}")]
            lines += [x for k, v in counters.items() for x in (f"# TYPE {k} counter", f"{k} {v}")]
        return "\n".join(lines) + "\n"
