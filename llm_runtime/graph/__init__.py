"""The ONNX graph at run time: execution providers, the session, and the runner that binds inputs and the cache."""
