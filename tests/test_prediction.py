"""The prediction proposer: it follows the output through the prediction and re-aligns after an edit like a diff."""
from llm_runtime.speculation.prediction import PredictionLookup

PREDICTION = list(range(100, 200))


def fed(tokens, prediction=PREDICTION) -> PredictionLookup:
    p = PredictionLookup(prediction)
    p.extend(tokens)
    return p


def test_drafts_the_prediction_from_the_start_and_follows_a_matching_output():
    assert PredictionLookup(PREDICTION).propose(5) == [100, 101, 102, 103, 104]
    assert fed(PREDICTION[:10]).propose(4) == [110, 111, 112, 113]
    assert fed(PREDICTION).propose(4) == []  # the prediction is used up
    assert PredictionLookup(PREDICTION).propose(0) == []


def test_an_inserted_span_realigns_where_the_output_returns_to_the_prediction():
    p = fed(PREDICTION[:20] + [7, 8, 9])
    assert p.propose(3) == []  # inside the insertion nothing matches
    p.extend([120])
    assert p.propose(3) == [121, 122, 123]


def test_a_deleted_span_realigns_after_it():
    assert fed(PREDICTION[:20] + [150, 151]).propose(3) == [152, 153, 154]


def test_a_changed_token_realigns_on_the_next_one():
    """A renamed variable: one token differs, the one after it is the prediction's again."""
    assert fed(PREDICTION[:30] + [5, 131]).propose(3) == [132, 133, 134]


def test_a_repeated_ngram_realigns_at_its_next_occurrence_not_its_first():
    """Code repeats lines: after an edit in the second copy, the draft continues in the second copy."""
    line = [1, 2, 3, 4]
    prediction = line + [10] + line + [20] + line + [30]
    p = fed(line + [10] + [9] + line[1:], prediction)  # the second line's first token changed
    assert p.propose(2) == [20, 1]


def test_a_single_token_realigns_only_near_the_last_aligned_position():
    prediction = list(range(300))
    assert fed([0, 1, 2, 1000, 5], prediction).propose(2) == [6, 7]
    assert fed([0, 1, 2, 1000, 250], prediction).propose(2) == []  # too far to trust one token
    assert fed([0, 1, 2, 1000, 249, 250], prediction).propose(2) == [251, 252]  # two tokens: anywhere


def test_the_streak_counts_tokens_that_followed_the_prediction_since_the_last_divergence_or_take():
    p = fed(PREDICTION[:5] + [7] + PREDICTION[6:9])
    assert p.take_streak() == 2  # 107 re-aligned on one token, then 108 followed
    p.extend(PREDICTION[9:12])
    assert p.take_streak() == 3 and p.streak == 0
