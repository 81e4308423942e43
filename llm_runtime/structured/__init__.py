"""Structured outputs: grammar constraints compiled with llguidance, and OpenAI tool calls in each model's format."""
