"""The slot table and the adapter registry: placement, rank padding, growth, LRU eviction of idle adapters only,
the memory cap, unloading while requests hold an adapter."""
import numpy as np
import pytest

from llm_runtime.adapters import LoraAdapter, LoraPair
from llm_runtime.adapters.registry import AdapterRegistry, AdapterSlotsFullError, UnknownAdapterError
from llm_runtime.adapters.slots import AdapterMismatchError, SlotTable, site_bytes
from llm_runtime.model_builder.contract import LORA_SLOT_OF, LoraSite

Q, K, V = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.v_proj"
DOWN = "model.layers.0.mlp.down_proj"
SITES = (LoraSite("layers.0.qkv", 8, 16, ((Q, 0, 8), (K, 8, 4), (V, 12, 4))), LoraSite("layers.0.down", 12, 8, ((DOWN, 0, 8),)))


def adapter(name: str, rank: int, seed: int = 0, modules=(Q, V, DOWN)) -> LoraAdapter:
    rng = np.random.default_rng(seed)
    dims = {Q: (8, 8), K: (8, 4), V: (8, 4), DOWN: (12, 8)}  # (in, out)
    return LoraAdapter(name, {m: LoraPair(rng.standard_normal((rank, dims[m][0])).astype(np.float32),
                                          rng.standard_normal((dims[m][1], rank)).astype(np.float32)) for m in modules})


def delta(table: SlotTable, slot: int, site: LoraSite, x: np.ndarray) -> np.ndarray:
    """What the graph adds for a row of `slot`: x @ A.T, masked to the slot's columns, @ B; from the views of the
    slots 1..slot as the runner binds them."""
    n = len(site.modules)
    views = table.views(1, max(slot, 1))
    mask = views[LORA_SLOT_OF % n] == slot
    return ((x @ views[site.a_name].T) * mask) @ views[site.b_name]


def expected(ad: LoraAdapter, site: LoraSite, x: np.ndarray) -> np.ndarray:
    out = np.zeros(site.out_dim, np.float32)
    for module, first, cols in site.modules:
        if module in ad.pairs:
            p = ad.pairs[module]
            out[first:first + cols] = x @ p.a.T @ p.b.T
    return out


def test_a_slot_gives_each_module_its_own_columns_padded_to_the_table_rank():
    table = SlotTable(SITES, np.float32, slots=3, rank=8)
    ads = {1: adapter("a", 4, 1), 3: adapter("b", 8, 2, modules=(K, DOWN))}
    for slot, ad in ads.items():
        table.write(slot, ad)
    x = {s.name: np.random.default_rng(5).standard_normal(s.in_dim).astype(np.float32) for s in SITES}
    for site in SITES:
        for slot, ad in ads.items():
            np.testing.assert_allclose(delta(table, slot, site, x[site.name]), expected(ad, site, x[site.name]),
                                       rtol=1e-5, atol=1e-5)
        assert not delta(table, 2, site, x[site.name]).any() and not delta(table, 0, site, x[site.name]).any()
    grown = table.grown(5, 16)
    for site in SITES:
        for slot, ad in ads.items():
            np.testing.assert_allclose(delta(grown, slot, site, x[site.name]), expected(ad, site, x[site.name]),
                                       rtol=1e-5, atol=1e-5)
    table.write(1, adapter("c", 2, 3, modules=(DOWN,)))  # a rewrite clears what the slot held
    assert not delta(table, 1, SITES[0], x[SITES[0].name]).any()


def test_factors_of_another_shape_or_module_are_refused():
    table = SlotTable(SITES, np.float32, 1, 8)
    with pytest.raises(AdapterMismatchError, match="o_proj"):
        table.check(LoraAdapter("x", {"model.layers.0.self_attn.o_proj": LoraPair(np.zeros((2, 8)), np.zeros((8, 2)))}))
    with pytest.raises(AdapterMismatchError, match=r"expected \(2, 8\) and \(8, 2\)"):
        table.check(LoraAdapter("x", {Q: LoraPair(np.zeros((2, 9)), np.zeros((8, 2)))}))
    with pytest.raises(AdapterMismatchError, match="not finite"):
        table.check(LoraAdapter("x", {Q: LoraPair(np.zeros((2, 8)), np.full((8, 2), np.inf))}))


def test_the_table_grows_by_doubling_up_to_max_slots_then_evicts_the_least_recently_used_idle_adapter():
    reg = AdapterRegistry(SITES, np.float32, max_slots=3)
    for i, name in enumerate("abc"):
        reg.load(adapter(name, 4, i))
    assert reg.table.slots == 3 and reg.table.rank == 8
    pins = {n: reg.acquire(n) for n in "abc"}
    for n in "bc":
        reg.release(pins[n])  # b idle first, then c; a still held
    reg.load(adapter("d", 4, 9))
    d = reg.acquire("d")
    assert d.slot == pins["b"].slot  # b was the least recently used idle one
    b = reg.acquire("b")  # b comes back into c's slot (a and d are held)
    assert b.slot == pins["c"].slot and b.key == pins["b"].key
    with pytest.raises(AdapterSlotsFullError):
        reg.acquire("c")  # every slot held
    x = np.ones(8, np.float32)
    np.testing.assert_allclose(delta(reg.table, b.slot, SITES[0], x), expected(reg.get("b"), SITES[0], x), rtol=1e-5)


def test_a_higher_rank_grows_the_table_and_keeps_the_adapters_in_place():
    reg = AdapterRegistry(SITES, np.float32, max_slots=4)
    reg.load(adapter("a", 4, 1))
    before = reg.table
    a = reg.acquire("a")
    reg.load(adapter("big", 20, 2))
    assert reg.table is not before and reg.table.rank == 24  # a new object: a call binding the old one is undisturbed
    x = np.ones(12, np.float32)
    np.testing.assert_allclose(delta(reg.table, a.slot, SITES[1], x), expected(reg.get("a"), SITES[1], x), rtol=1e-5)


def test_the_memory_cap_bounds_the_slots():
    per_slot = site_bytes(SITES, 8, 4)
    reg = AdapterRegistry(SITES, np.float32, max_slots=8, max_bytes=2 * per_slot + per_slot // 2)
    for i in range(4):
        reg.load(adapter(f"a{i}", 8, i))
    assert reg.table.slots == 2 and reg.nbytes <= 2 * per_slot + per_slot // 2 + 1024
    assert len(reg.names()) == 4  # all loaded; two resident, the others come in when used
    tight = AdapterRegistry(SITES, np.float32, max_bytes=per_slot // 2)
    tight.load(adapter("a", 8))  # loaded, but no slot fits under the cap
    with pytest.raises(AdapterSlotsFullError, match="over the adapter memory cap"):
        tight.acquire("a")


def test_unloading_a_held_adapter_lets_its_requests_finish_and_frees_the_slot_after():
    reg = AdapterRegistry(SITES, np.float32, max_slots=1)
    reg.load(adapter("a", 4))
    pin = reg.acquire("a")
    reg.unload("a")
    with pytest.raises(UnknownAdapterError):
        reg.acquire("a")
    reg.load(adapter("a", 4, 7))  # the name again: another adapter, another key (no cached prompt is shared)
    with pytest.raises(AdapterSlotsFullError):
        reg.acquire("a")  # the one slot is still the old one's, held
    reg.release(pin)
    again = reg.acquire("a")
    assert again.slot == pin.slot and again.key != pin.key


def test_a_name_is_loaded_once_unless_replaced():
    reg = AdapterRegistry(SITES, np.float32)
    reg.load(adapter("a", 4))
    with pytest.raises(ValueError, match="loaded already"):
        reg.load(adapter("a", 4))
    old = reg.acquire("a")
    reg.load(adapter("a", 8, 3), replace=True)
    assert reg.acquire("a").key != old.key
