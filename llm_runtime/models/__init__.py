"""Which model a name means: the default model, built folders, and sources built into the cache on first use."""
