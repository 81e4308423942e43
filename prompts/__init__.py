"""The runtime's shipped texts: chat templates (templates/) and the perplexity sample; benchmark inputs live in benchmarks/prompts/."""
