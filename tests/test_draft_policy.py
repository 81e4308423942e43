import pytest

from llm_runtime.speculation import DraftPolicy
from llm_runtime.speculation.policy import best_k, expected_tokens


def test_expected_tokens_of_a_verified_run():
    assert expected_tokens(0.0, 4) == 1.0
    assert expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


def test_k_follows_acceptance_and_shrinks_with_the_batch():
    assert best_k(0.95, 4, batch=1) == 4
    assert best_k(0.1, 4, batch=1) == 0
    ks = [best_k(0.7, 8, batch=b) for b in (1, 2, 4, 8, 16, 32)]
    assert ks == sorted(ks, reverse=True) and ks[0] > ks[-1]
    assert best_k(0.4, 4, batch=32) == 0  # a large batch: a draft must be likely to pay
    assert best_k(0.6, 4, batch=32) == 0  # 1.6 tokens for a 1.78x row
    assert best_k(0.85, 4, batch=32) == 1  # 1.85 tokens for it: one draft pays


def test_failing_rows_back_off_and_recover():
    p = DraftPolicy(max_k=4)
    for _ in range(20):  # drafts always accepted: the estimate climbs, k reaches the maximum
        p.update(p.k(1, 100) or 4, 4)
    assert p.rate > 0.9 and p.k(1, 100) == 4
    p = DraftPolicy(max_k=4, fail_limit=3, accepted=18, tried=20)  # a good history, then three failures
    for _ in range(3):
        assert p.cooldown == 0
        p.update(2, 0)
    assert p.cooldown == 4  # three failures in a row: no drafts for 4 steps
    assert [p.k(1, 100) for _ in range(4)] == [0, 0, 0, 0]
    for _ in range(3):
        p.update(2, 0)
    assert p.cooldown == 8  # again: the cooldown doubles
    p.cooldown = 0
    p.update(2, 1)
    assert p.backoff == 4 and p.failures == 0


def test_k_leaves_room_for_the_bonus_token():
    p = DraftPolicy(max_k=4, accepted=10, tried=10)
    assert p.k(1, remaining=3) == 2
    assert p.k(1, remaining=1) == 0


def test_a_row_with_nothing_to_copy_probes_rarely():
    p = DraftPolicy(max_k=4)
    drafts = 0
    for _ in range(1000):
        k = p.k(1, 100)
        if k:
            drafts += 1
            p.update(k, 0)
    assert drafts < 30  # cooldowns of 4, 8, ... 64 steps between single-draft probes
    assert p.cooldown <= 64
    p.cooldown = 0
    assert p.k(1, 100) == 1  # a probe
    p.update(1, 1)  # that succeeds: probing resumes soon
    assert p.backoff == 4


def test_drafts_pay_for_their_call_alone_but_not_a_lone_probe_in_a_large_batch():
    from llm_runtime.speculation.policy import drafts_pay

    one = dict(drafted=1, width=2, drafted_span=1, plain=0, plain_span=0, all_span=1)
    assert drafts_pay(expected=1.5, **one)  # batch 1: a 2-token call at 1.27x for 1.5 tokens
    assert not drafts_pay(expected=1.1, **one)
    probe = dict(drafted=1, width=2, drafted_span=1, plain=7, plain_span=7, all_span=8)
    assert not drafts_pay(expected=1.5, **probe)  # batch 8: a second call for one row's draft
    every = dict(drafted=8, drafted_span=8, plain=0, plain_span=0, all_span=8)
    assert drafts_pay(expected=8 * 1.9, width=2, **every)  # batch 8, every row drafts one, nearly always taken
    assert drafts_pay(expected=8 * 3.5, width=4, **every)  # three each, nearly always taken: 2.98x the cost, 3.5x tokens
    assert not drafts_pay(expected=8 * 2.9, width=4, **every)  # mostly taken is not enough: 2.9x tokens
    assert not drafts_pay(expected=8 * 1.9, width=4, **every)  # three each, mostly rejected


def test_outside_evidence_ends_a_cooldown_and_raises_the_estimate():
    p = DraftPolicy(max_k=32, fail_limit=1)
    p.update(3, 0)
    assert p.cooldown == 4 and p.k(1, 100) == 0
    rate = p.rate
    p.resume(8)  # the output followed the prediction for 8 tokens on its own
    assert p.cooldown == 0 and p.failures == 0 and p.rate > rate and p.k(1, 100) >= 2
