"""Chat: OpenAI messages to template messages, and the model's chat template that renders them."""
