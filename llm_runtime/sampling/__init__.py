"""Sampling: the per-request settings (`SamplingParams`), pure functions over logits, and one row's sampler."""
