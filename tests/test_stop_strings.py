"""StopStringMatcher: the stream shows no part of a stop string, however the text is split."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_runtime.engine.stop_strings import StopStringMatcher


def run(stops, deltas):
    """Feed deltas until stopped; return (shown pieces, stopped, matched)."""
    m = StopStringMatcher(stops)
    shown = []
    for d in deltas:
        text, stopped = m.feed(d)
        shown.append(text)
        if stopped:
            return shown, True, m.matched
    shown.append(m.flush())
    return shown, False, m.matched


def test_no_stops_is_passthrough():
    m = StopStringMatcher([])
    assert m.feed("abc") == ("abc", False)
    assert m.feed("") == ("", False)
    assert m.flush() == "" and m.matched is None


def test_stop_spanning_deltas_is_never_shown():
    shown, stopped, matched = run(["<|end|>"], ["Hello <", "|e", "nd", "|> ignored"])
    assert shown == ["Hello ", "", "", ""]
    assert stopped and matched == "<|end|>"


def test_overlapping_prefix():
    shown, stopped, _ = run(["abc"], ["a", "a", "b", "c"])
    assert "".join(shown) == "a" and stopped
    shown, stopped, _ = run(["abc"], ["aabc"])
    assert shown == ["a"] and stopped


def test_false_start_is_released():
    shown, stopped, _ = run(["abc"], ["xa", "b", "d", "e"])
    assert shown == ["x", "", "abd", "e", ""] and not stopped


def test_multiple_stops_first_to_end_wins():
    shown, stopped, matched = run(["world", "lo w"], ["Hello world"])
    assert shown == ["Hel"] and matched == "lo w"
    shown, stopped, matched = run(["\n\n", "User:"], ["Sure.\n", "\nUser: hi"])
    assert "".join(shown) == "Sure." and matched == "\n\n"
    _, _, matched = run(["ab", "abc"], ["abc"])
    assert matched == "ab"


def test_stop_at_very_start():
    shown, stopped, matched = run(["STOP"], ["STOP", "more"])
    assert shown == [""] and stopped and matched == "STOP"


def test_held_text_flushed_at_end():
    shown, stopped, matched = run(["</answer>"], ["42 </ans"])
    assert shown == ["42 ", "</ans"] and not stopped and matched is None


def test_feed_after_stop_returns_nothing():
    m = StopStringMatcher(["x"])
    assert m.feed("ax") == ("a", True)
    assert m.feed("more") == ("", True)
    assert m.flush() == ""


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="abc\n", max_size=30),
       stops=st.lists(st.text(alphabet="abc\n", min_size=1, max_size=4), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 30), max_size=8))
def test_any_split_gives_the_same_result(text, stops, cuts):
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    deltas = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    shown, stopped, matched = run(stops, deltas)
    whole, whole_stopped, whole_matched = run(stops, list(text))
    assert ("".join(shown), stopped, matched) == ("".join(whole), whole_stopped, whole_matched)
    out = "".join(shown)
    if stopped:
        assert text.startswith(out + matched)
        assert not any(s in out + matched[:-1] for s in stops)
    else:
        assert out == text and not any(s in text for s in stops)
    for i in range(1, len(shown) + 1):  # no stop string ever appears in what was shown so far
        assert not any(s in "".join(shown[:i]) for s in stops)
