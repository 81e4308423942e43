"""Structured outputs: grammar constraints (JSON schema, regex, Lark grammar) compiled with llguidance, and the engine's masks."""
