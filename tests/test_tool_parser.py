"""Tool-call parsing for each native format on fixed texts: content and calls, two parallel calls, malformed
JSON, and every way of splitting the text into stream deltas (the detokenizer emits whole characters)."""
from __future__ import annotations

import json

import pytest

from llm_runtime.tools.format import GENERIC, HERMES, LLAMA3, MISTRAL
from llm_runtime.tools.parser import CallDelta, ContentDelta, ToolCallParser
from llm_runtime.tools.reply import fold_reply, parse_reply

WEATHER = {"city": "Zürich", "unit": "celsius", "note": "a \"quoted\" } brace"}
TIME = {"tz": "Europe/Paris"}
HERMES_TWO = (f'Let me look that up.\n<tool_call>\n{{"name": "get_weather", "arguments": {json.dumps(WEATHER)}}}\n'
              f'</tool_call>\n<tool_call>\n{{"name": "get_time", "arguments": {json.dumps(TIME)}}}\n</tool_call>')
LLAMA3_ONE = f'{{"name": "get_weather", "parameters": {json.dumps(WEATHER)}}}'
LLAMA3_TWO = f'{LLAMA3_ONE}; {{"name": "get_time", "parameters": {json.dumps(TIME)}}}'
MISTRAL_TWO = (f'[TOOL_CALLS] [{{"name": "get_weather", "arguments": {json.dumps(WEATHER)}}}, '
               f'{{"name": "get_time", "arguments": {json.dumps(TIME)}, "id": "abcDEF123"}}]')
GENERIC_TWO = (f'{{"tool_calls": [{{"name": "get_weather", "arguments": {json.dumps(WEATHER)}}}, '
               f'{{"name": "get_time", "arguments": {json.dumps(TIME)}}}]}}')
GENERIC_ANSWER = json.dumps({"content": 'Il fait 21 °C à "Zürich" 🙂\nsee <tool_call>'})
TWO_CALLS = [("get_weather", WEATHER), ("get_time", TIME)]

CASES = [  # (format, text, content, [(name, arguments)])
    (HERMES, HERMES_TWO, "Let me look that up.\n", TWO_CALLS),
    (HERMES, "Paris is the capital of France.", "Paris is the capital of France.", []),
    (HERMES, "a < b and <tool> is not <tool_call", "a < b and <tool> is not <tool_call", []),
    (LLAMA3, LLAMA3_ONE, None, TWO_CALLS[:1]),
    (LLAMA3, LLAMA3_TWO, None, TWO_CALLS),
    (LLAMA3, "<|python_tag|>" + LLAMA3_ONE, None, TWO_CALLS[:1]),
    (LLAMA3, "The answer is {\"x\": 1}.", "The answer is {\"x\": 1}.", []),
    (MISTRAL, MISTRAL_TWO, None, TWO_CALLS),
    (MISTRAL, "Sure: here is [TOOL_CALLS?] no call", "Sure: here is [TOOL_CALLS?] no call", []),
    (GENERIC, GENERIC_TWO, None, TWO_CALLS),
    (GENERIC, GENERIC_ANSWER, 'Il fait 21 °C à "Zürich" 🙂\nsee <tool_call>', []),
    (GENERIC, "plain text, not JSON", "plain text, not JSON", []),
]
MALFORMED = [  # free replies whose call does not parse: returned as content, never raised
    (HERMES, 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n</tool_call>'),
    (HERMES, '<tool_call>\nget_weather(city="Paris")\n</tool_call>'),
    (HERMES, '<tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>'),
    (HERMES, '<tool_call>\n{"name": "get_weather", "arguments": "not json"}\n</tool_call>'),
    (LLAMA3, '{"name": "get_weather", "parameters": {"city": "Par'),
    (LLAMA3, '{"name": "get_weather", "parameters": [1, 2]}'),
    (MISTRAL, '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}, oops]'),
    (GENERIC, '{"answer": "Paris"}'),
]


def calls_of(reply) -> list[tuple[str, dict]]:
    return [(c.name, json.loads(c.arguments)) for c in reply.tool_calls]


@pytest.mark.parametrize("stream_arguments", [False, True])
@pytest.mark.parametrize("fmt, text, content, calls", CASES)
def test_fixed_texts(fmt, text, content, calls, stream_arguments):
    reply = parse_reply(fmt, text, stream_arguments)
    assert reply.content == content and calls_of(reply) == calls
    assert len({c.id for c in reply.tool_calls}) == len(calls)
    if fmt is MISTRAL:  # its templates accept only 9-character ids
        assert all(len(c.id) == 9 and c.id.isalnum() for c in reply.tool_calls)


@pytest.mark.parametrize("fmt, text", MALFORMED)
def test_malformed_free_calls_are_content(fmt, text):
    reply = parse_reply(fmt, text)
    assert reply.tool_calls == [] and reply.content == text


def test_text_around_a_good_call_is_content_and_a_later_bad_call_too():
    text = (f'A\n<tool_call>\n{{"name": "get_time", "arguments": {json.dumps(TIME)}}}\n</tool_call> B '
            '<tool_call>\n{"name": broken}\n</tool_call>')
    reply = parse_reply(HERMES, text)
    assert calls_of(reply) == [("get_time", TIME)]
    assert reply.content == 'A\n B <tool_call>\n{"name": broken}\n</tool_call>'


def test_streamed_arguments_arrive_in_fragments_after_the_header():
    parser = ToolCallParser(HERMES, stream_arguments=True)
    events = [e for piece in HERMES_TWO for e in parser.feed(piece)] + parser.finish()
    first = [e for e in events if isinstance(e, CallDelta) and e.index == 0]
    assert first[0].name == "get_weather" and first[0].id and first[0].arguments == ""
    assert all(e.id is None and e.name is None for e in first[1:]) and len(first) > 10
    assert json.loads("".join(e.arguments for e in first)) == WEATHER


def test_truncated_enforced_call_keeps_its_partial_arguments():
    cut = HERMES_TWO[:HERMES_TWO.index("celsius")]
    reply = parse_reply(HERMES, cut, stream_arguments=True)
    assert reply.content == "Let me look that up.\n" and [c.name for c in reply.tool_calls] == ["get_weather"]
    assert reply.tool_calls[0].arguments == cut[cut.index('{"city"'):]
    assert parse_reply(HERMES, cut).content == cut  # a free reply cut mid-call is all content


def split_events(fmt, text, stream_arguments, cuts):
    parser = ToolCallParser(fmt, stream_arguments, new_id=iter(range(100)).__next__)
    bounds = [0, *cuts, len(text)]
    events = [e for a, b in zip(bounds, bounds[1:]) for e in parser.feed(text[a:b])]
    return events + parser.finish()


def canonical(events):
    reply = fold_reply(events)
    return reply.content, [(c.name, c.arguments) for c in reply.tool_calls]


@pytest.mark.parametrize("stream_arguments", [False, True])
@pytest.mark.parametrize("fmt, text", [(f, t) for f, t, _, calls in CASES if calls or f is GENERIC] + MALFORMED[:2])
def test_every_split_gives_the_same_reply_and_no_markup_in_content(fmt, text, stream_arguments):
    whole = canonical(split_events(fmt, text, stream_arguments, []))
    for i in range(len(text) + 1):
        events = split_events(fmt, text, stream_arguments, [i])
        assert canonical(events) == whole, i
        if whole[1]:  # a call was parsed: no piece of its markup reached the content
            for e in events:
                if isinstance(e, ContentDelta):
                    assert not any(m in e.text for m in ("<tool_call", "[TOOL_CALLS", '"name"', "</tool")), (i, e)
    step = max(1, len(text) // 40)
    for i in range(0, len(text) + 1, step):
        for j in range(i, len(text) + 1, step):
            assert canonical(split_events(fmt, text, stream_arguments, [i, j])) == whole, (i, j)
    assert canonical(split_events(fmt, text, stream_arguments, list(range(1, len(text))))) == whole
