"""Model quality: perplexity and KL divergence, and a build's logits against transformers."""
