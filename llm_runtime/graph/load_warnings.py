"""onnxruntime's load-time warning about the contract's optional inputs, muted exactly and nothing else.

The optional inputs (`query_seqlens`, `logits_indices`, a LoRA build's `lora_index` and `lora.*` factors) are graph inputs with default initializers, so that
onnxruntime-genai, which feeds only the inputs it knows, runs our graphs unchanged. The other way ONNX has to
declare them, optional-typed inputs without a default, crashes onnxruntime-genai 0.18 when it opens the model
(a segmentation fault in `og.Model`). onnxruntime warns about every initializer that is also a graph input
whenever it loads the graph ("Initializer query_seqlens appears in graph inputs and will not be treated as
constant value/weight..."); it writes that from C++ to file descriptor 2, with no switch for one message.
`without_default_input_warnings()` drops exactly those lines and passes every other line through.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from llm_runtime.model_builder.contract import LORA_INDEX, LORA_PREFIX, OPTIONAL_INPUTS

# the optional inputs, and a LoRA build's index and factor inputs (rank-0 defaults)
DEFAULT_INPUT_WARNING = re.compile(
    rb"Initializer (%s|%s[\w.]+) appears in graph inputs and will not be treated as constant" %
    (b"|".join(re.escape(name.encode()) for name in (*OPTIONAL_INPUTS, LORA_INDEX)), re.escape(LORA_PREFIX.encode())))
_redirect = threading.Lock()  # one redirection of fd 2 at a time: nested ones would restore the wrong target


@contextmanager
def without_default_input_warnings() -> Iterator[None]:
    """Within the block (an onnxruntime session being created), stderr lines that are the optional inputs'
    initializer warning are dropped; every other line reaches stderr, in order, when the block ends."""
    with _redirect, tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = memoryview(b"".join(line for line in held if not DEFAULT_INPUT_WARNING.search(line)))
            while kept:
                kept = kept[os.write(2, kept):]
