"""The OpenAI protocol: request bodies to `SamplingParams` (one mapping, one field policy) and replies back."""
