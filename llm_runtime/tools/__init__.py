"""OpenAI tool calling: tools and tool_choice, each model's call format, the prompt, the parser and the deltas."""
