"""Record an agent session for benchmarks/suffix_cache.py: multi-turn tool calling, each request saved in order.

    python benchmarks/suffix_agent_trace.py [--model default] [--out benchmarks/prompts/suffix_agent_trace.json]

Eight travel tasks, each driven like an agent loop: the model is offered the tools, its calls are answered by
deterministic fake tools, for at most three rounds of calls; then one more request with tool_choice "none" asks
for the answer in words. Greedy, on the engine without speculation. Every request (messages, tools, tool_choice)
is written in order, so that a replay sends exactly the same requests whatever the replayed model answers.
"""
from __future__ import annotations

import argparse
import json
import zlib
from pathlib import Path

from llm_runtime import LLM, SamplingParams

SYSTEM = "You are a travel assistant. Use the tools to look things up, then answer briefly."
TASKS = ("What is the weather in Paris and in Berlin?",
         "Find me a flight from Oslo to Rome on 2027-03-14.",
         "I am going to Tokyo next week. What is the weather there, and is there a hotel near Shibuya under 150 EUR?",
         "Compare the weather in Lisbon, Madrid and Vienna.",
         "Book a hotel in Nairobi for 2 nights from 2027-05-02.",
         "Is there a flight from Lima to Toronto on 2027-06-01, and what is the weather in Toronto?",
         "What is the weather in Oslo? If it is cold, find a flight from Oslo to Madrid on 2027-02-10.",
         "Find hotels in Berlin under 100 EUR and tell me the weather there.")
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The current weather in a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search_flights", "description": "Flights between two cities on a date (YYYY-MM-DD)",
        "parameters": {"type": "object", "properties": {"origin": {"type": "string"},
                                                        "destination": {"type": "string"},
                                                        "date": {"type": "string"}},
                       "required": ["origin", "destination", "date"]}}},
    {"type": "function", "function": {
        "name": "search_hotels", "description": "Hotels in a city, cheapest first, optionally under a price",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                        "max_price_eur": {"type": "number"}},
                       "required": ["city"]}}},
]


def fake_tool(name: str, arguments: str) -> str:
    """A deterministic answer, varied by the arguments."""
    h = zlib.crc32(f"{name}{arguments}".encode())
    if name == "get_weather":
        return json.dumps({"temperature_c": h % 30 - 5, "conditions": ["sunny", "cloudy", "rain", "snow"][h % 4]})
    if name == "search_flights":
        return json.dumps({"flights": [{"flight": f"XY{h % 900 + 100}", "departs": f"{h % 12 + 7:02d}:15",
                                        "price_eur": h % 300 + 80}]})
    return json.dumps({"hotels": [{"name": f"Hotel {['Aurora', 'Central', 'Garden'][h % 3]}",
                                   "price_eur": h % 120 + 60}]})


def _object(text: str) -> bool:
    """Whether a call's arguments are a JSON object (a 135M model's sometimes are not: such a call is dropped)."""
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def record(llm: LLM, max_tokens: int) -> list[dict]:
    requests = []
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    for task in TASKS:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
        for turn in range(4):
            choice = "auto" if turn < 3 else "none"
            requests.append({"messages": json.loads(json.dumps(messages)), "tool_choice": choice})
            reply = llm.chat(messages, params, tools=TOOLS, tool_choice=choice)
            calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                     for c in reply.tool_calls or () if _object(c.arguments)]
            if not calls:
                break
            messages.append({"role": "assistant", "content": reply.text or None, "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": fake_tool(c["function"]["name"],
                                                                                      c["function"]["arguments"])}
                         for c in calls]
    return requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "prompts" / "suffix_agent_trace.json")
    args = ap.parse_args()
    requests = record(LLM(args.model), args.max_tokens)
    args.out.write_text(json.dumps({"tools": TOOLS, "max_tokens": args.max_tokens, "requests": requests}, indent=1))
    print(f"{len(requests)} requests written to {args.out}")


if __name__ == "__main__":
    main()
