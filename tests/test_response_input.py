"""server/response_input.py: Responses input items -> chat messages, output items -> the assistant turn."""
import pytest

from llm_runtime.errors import ParameterError
from llm_runtime.server.response_input import input_items, input_messages, input_origins, output_messages


def test_a_string_is_one_user_message():
    assert input_messages("Hi") == [{"role": "user", "content": "Hi"}]


def test_items_become_chat_messages():
    items = [{"role": "developer", "content": "Be brief."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                             {"type": "input_text", "text": "b"}]},
             {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
              "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
             {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}'},
             {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
             {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "noon"}]}]
    assert input_messages(items) == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"}]
    # the input item each message starts at, for errors: the calls join the assistant message of input[2]
    assert input_origins(items) == ("input[0]", "input[1]", "input[2]", "input[5]", "input[6]")
    assert input_origins("Hi") == ("input",)
    calls = input_messages([{"role": "user", "content": "x"},
                            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])
    assert calls[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


@pytest.mark.parametrize("value, where", [
    ([], "non-empty"), (5, "non-empty"), (["hi"], "input[0]"), ([{"role": "wizard", "content": "x"}], "input[0]"),
    ([{"role": "user", "content": "x"}, {"type": "input_image", "image_url": "u"}], "input[1]"),
    ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}],
     "input[0].content[0]: this model is text-only; 'input_file' parts are not supported"),
    ([{"role": "user", "content": None}], "input[0]"), ([{"type": "item_reference", "id": "msg_1"}], "input[0]"),
    ([{"type": "function_call", "name": "f", "arguments": "{}"}], "call_id"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": '}], "input[0]: arguments"),
    ([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}], "input[0]: arguments"),
])
def test_bad_items_name_themselves(value, where):
    with pytest.raises(ParameterError) as e:
        input_messages(value)
    assert e.value.param == "input" and where in str(e.value)


def test_output_items_are_the_assistant_turn_with_its_calls():
    output = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Par"},
                                                                   {"type": "output_text", "text": "is"}]}]
    assert output_messages(output) == [{"role": "assistant", "content": "Paris"}]
    calls = [{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": '{"a": 1}',
              "status": "completed"},
             {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "g", "arguments": "{}",
              "status": "completed"}]
    assert output_messages(calls) == [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}]
    assert output_messages(output[:1] + calls[:1])[0] == {"role": "assistant", "content": "Paris", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    cut = {"type": "function_call", "id": "fc_3", "call_id": "call_3", "name": "f", "arguments": '{"a": ',
           "status": "incomplete"}
    assert output_messages(output + [cut]) == output_messages(output)


def test_listed_items_carry_ids_parts_and_status():
    assert input_items("Hi")[0]["content"] == [{"type": "input_text", "text": "Hi"}]
    items = input_items([{"role": "assistant", "content": "Yes", "id": "msg_given"},
                         {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                         {"type": "function_call_output", "call_id": "c", "output": "ok"}])
    assert items[0] == {"id": "msg_given", "type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "Yes", "annotations": []}]}
    assert items[1]["id"].startswith("fc_") and items[2]["id"].startswith("fco_")
    assert all(i["status"] == "completed" for i in items)
