"""Whether an adapter fits a base model: its model type, and for every linear it adapts, that the base has that
linear with the same input and output sizes. The first problem is one AdapterError; nothing is loaded before."""
from __future__ import annotations

from ..errors import AdapterError
from ..model_builder.config import ModelConfig
from ..model_builder.weights import ATTN, LAYER, MLP
from .lora import LoraAdapter


def linear_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """Module name -> (in, out) of every linear an adapter may target: each layer's q/k/v/o and gate/up/down."""
    sizes = {ATTN["q"]: (cfg.hidden_size, cfg.q_size), ATTN["k"]: (cfg.hidden_size, cfg.kv_size),
             ATTN["v"]: (cfg.hidden_size, cfg.kv_size), ATTN["o"]: (cfg.q_size, cfg.hidden_size),
             MLP["gate"]: (cfg.hidden_size, cfg.intermediate_size), MLP["up"]: (cfg.hidden_size, cfg.intermediate_size),
             MLP["down"]: (cfg.intermediate_size, cfg.hidden_size)}
    return {LAYER.format(i=i) + name: shape for i in range(cfg.num_layers) for name, shape in sizes.items()}


def check_fits(adapter: LoraAdapter, model_type: str, shapes: dict[str, tuple[int, int]]) -> None:
    """Raise AdapterError naming the first misfit: another model type, a module the base lacks, or a factor whose
    sizes differ from the base linear's (in, out) in `shapes`."""
    where = adapter.source or adapter.name
    if adapter.base_model_type is not None and adapter.base_model_type != model_type:
        raise AdapterError(f"adapter {adapter.name!r} ({where}) is for a {adapter.base_model_type} model; "
                           f"the base is {model_type}")
    for module, pair in adapter.pairs.items():
        if module not in shapes:
            near = sorted(shapes)[:3]
            raise AdapterError(f"adapter {adapter.name!r} ({where}) adapts {module}, which the base ({model_type}) "
                               f"has no linear for (it has e.g. {', '.join(near)})")
        d_in, d_out = shapes[module]
        a_in, b_out = pair.a.shape[1], pair.b.shape[0]
        if (a_in, b_out) != (d_in, d_out) or pair.a.shape[0] != pair.b.shape[1]:
            raise AdapterError(f"adapter {adapter.name!r} ({where}): {module} has A {list(pair.a.shape)} and "
                               f"B {list(pair.b.shape)}, giving in {a_in} and out {b_out}; the base linear has "
                               f"in {d_in} and out {d_out}")
