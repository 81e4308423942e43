"""The chat page at / in a real headless Chromium (Playwright) against a real `llm-runtime serve` of the default model.

The browser is Debian's chromium-headless-shell (`apt-get install -y chromium-headless-shell`), or the one named by
$LLM_RUNTIME_CHROMIUM: Playwright cannot download its own here. Without one, these tests skip and say so.
Set $LLM_RUNTIME_WEB_UI_SCREENSHOT to a path to have the streamed-reply test save docs/server.md's screenshot there."""
import json
import os
import shutil
import time

import httpx
import pytest
from test_server import KEY, metric, serving

try:
    from playwright import sync_api
except ImportError:  # the browser tests skip; the route's own tests still run
    sync_api = None

CHAT_STORE = "llm-runtime.chat"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--no-first-run", "--disable-sync"]
CANDIDATES = ("/usr/lib/chromium/chromium-headless-shell", "chromium-headless-shell", "/usr/lib/chromium/chromium",
              "chromium")
PRIME = "Write a short Python function that checks whether a number is prime."
HOSTILE = "\n".join([
    "Here is <script>window.pwned = 1</script> and <img src=x onerror=\"window.pwned = 2\">.",
    "**bold <b>tag</b>** and a [link](javascript:window.pwned=3) and [a real one](https://example.com/a).",
    "```html", "</code></pre><script>window.pwned = 4</script>", "```",
    "| a | b |", "|---|---|", "| <iframe src=x></iframe> | `<svg onload=x>` |",
])


def chromium() -> str | None:
    """The Chromium binary to drive: $LLM_RUNTIME_CHROMIUM, else Debian's packages, else None."""
    if os.environ.get("LLM_RUNTIME_CHROMIUM"):
        return os.environ["LLM_RUNTIME_CHROMIUM"]
    for name in CANDIDATES:
        if path := (name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    if sync_api is None:
        pytest.skip("playwright is not installed (the dev extra has it)")
    if path is None:
        pytest.skip("no Chromium to drive: apt-get install -y chromium-headless-shell, or set $LLM_RUNTIME_CHROMIUM")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def smol_server(smollm_build):
    """The default model at int4 behind a key (the page is public, /v1 is not)."""
    with serving(smollm_build("int4"), "--served-model-name", "smol", "--api-key", KEY) as base:
        yield base


@pytest.fixture
def page(browser, smol_server):
    """A fresh browser profile on the page, its key already entered in this tab; fails on any script error."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.add_init_script(f"sessionStorage.setItem('llm-runtime.api-key', {json.dumps(KEY)})")
    pg = context.new_page()
    pg.set_default_timeout(90_000)  # the machine is shared: a reply can take a while
    errors = []
    pg.on("pageerror", lambda e: errors.append(e))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    pg.goto(smol_server + "/")
    pg.wait_for_function("() => document.querySelector('#model').options.length > 0")
    yield pg
    context.close()
    assert not errors, errors


def settings(pg, **values) -> None:
    if pg.is_hidden("#settings"):
        pg.click("#toggle-settings")
    for name, value in values.items():
        pg.fill(f"#{name}", str(value))
        pg.dispatch_event(f"#{name}", "change")


def stored(pg) -> dict:
    return json.loads(pg.evaluate(f"localStorage.getItem('{CHAT_STORE}')"))


def wait_reply_done(pg) -> None:
    pg.wait_for_selector("#send:not([hidden])")


def api_reply(base: str, messages: list, max_tokens: int) -> str:
    r = httpx.post(f"{base}/v1/chat/completions", timeout=120, headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "smol", "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    return r.json()["choices"][0]["message"]["content"]


def test_page_is_public_and_holds_nothing_of_the_server(smol_server):
    page = httpx.get(smol_server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    bodies = [page.text] + [httpx.get(f"{smol_server}/web/{n}").text for n in ("app.js", "style.css", "markdown.js")]
    assert all(KEY not in b and "smol" not in b and "/tmp" not in b for b in bodies)
    assert httpx.get(smol_server + "/web/web_ui.py").status_code == 404
    assert httpx.get(smol_server + "/web/..%2Fapp.py").status_code == 404
    assert httpx.get(smol_server + "/v1/models").status_code == 401  # the key still guards /v1


def test_no_web_ui_flag_turns_the_page_off(tiny_build):
    with serving(tiny_build("llama-gqa2"), "--no-web-ui") as base:
        r = httpx.get(base + "/")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert httpx.get(base + "/web/app.js").status_code == 404
        assert httpx.get(base + "/v1/models").status_code == 200


def test_streamed_reply_grows_and_equals_the_api(page, smol_server):
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["smol"]
    settings(page, temperature=0, max_tokens=96)
    # at every change of the page: the reply's shown length, and the reply's text the page keeps
    page.evaluate("""() => {
        window.shown = [];
        window.kept = [];
        new MutationObserver(() => {
            const body = document.querySelector('.message.assistant .body');
            const last = JSON.parse(localStorage.getItem('llm-runtime.chat')).messages.at(-1);
            if (!body || last.role !== 'assistant') return;
            window.shown.push(body.textContent.length);
            window.kept.push(last.content);
        }).observe(document.querySelector('#messages'), {childList: true, subtree: true, characterData: true});
    }""")
    page.fill("#input", "First line")
    page.press("#input", "Shift+Enter")
    page.keyboard.type("second line")
    assert page.input_value("#input") == "First line\nsecond line" and page.locator(".message").count() == 0
    page.fill("#input", PRIME)
    page.press("#input", "Enter")
    page.wait_for_selector("#stop:not([hidden])")
    wait_reply_done(page)
    reply = stored(page)["messages"][1]
    kept = page.evaluate("window.kept")
    assert all(reply["content"].startswith(k) for k in kept) and len(set(kept)) >= 4, kept  # it grew as it came
    assert len(set(page.evaluate("window.shown"))) >= 4
    assert reply["content"] == api_reply(smol_server, [{"role": "user", "content": PRIME}], 96)
    assert reply["finish"] == "length" and reply["stats"]["tokens"] == 96 and reply["stats"]["exact"]
    assert reply["stats"]["ttftMs"] > 0 and reply["stats"]["tokensPerSecond"] > 0
    meta = page.inner_text(".message.assistant .meta")
    assert "TTFT" in meta and "tok/s" in meta and "96 tokens" in meta
    assert page.locator(".message.assistant .code pre code").count() >= 1  # the function, as a code block
    if shot := os.environ.get("LLM_RUNTIME_WEB_UI_SCREENSHOT"):
        page.screenshot(path=shot)


def test_stop_cancels_the_request_on_the_server(page, smol_server):
    settings(page, temperature=0, max_tokens=1000)
    page.fill("#input", "Write a long story about a dragon who learns to read.")
    page.press("#input", "Enter")
    page.wait_for_function("() => document.querySelector('.message.assistant .markdown')?.textContent.length > 20")
    assert metric(smol_server, "llm_running_sequences") == 1
    page.click("#stop")
    wait_reply_done(page)
    deadline = time.monotonic() + 10
    while metric(smol_server, "llm_running_sequences") + metric(smol_server, "llm_waiting_sequences") > 0:
        assert time.monotonic() < deadline, "the server still generates the stopped reply"
        time.sleep(0.05)
    generated = metric(smol_server, "llm_generation_tokens_total")
    time.sleep(0.5)
    assert metric(smol_server, "llm_generation_tokens_total") == generated
    reply = stored(page)["messages"][1]
    assert reply["finish"] == "stopped" and 0 < reply["stats"]["tokens"] < 1000 and not reply["stats"]["exact"]
    assert "stopped" in page.inner_text(".message.assistant .meta")


def test_reload_restores_the_conversation_and_settings(page):
    settings(page, temperature=0, max_tokens=12, seed=7, system="You are a terse assistant.")
    page.fill("#input", "Name a color.")
    page.press("#input", "Enter")
    wait_reply_done(page)
    before = page.inner_text("#messages")
    page.reload()
    page.wait_for_selector(".message.assistant")
    assert page.inner_text("#messages") == before and page.locator(".message").count() == 2
    assert page.input_value("#system") == "You are a terse assistant."
    assert (page.input_value("#temperature"), page.input_value("#max_tokens"), page.input_value("#seed")) == (
        "0", "12", "7")
    page.click("#new-chat")
    page.reload()
    page.wait_for_function("() => document.querySelector('#model').options.length > 0")
    assert page.locator(".message").count() == 0 and page.input_value("#system") == "You are a terse assistant."
    page.evaluate(f"localStorage.setItem('{CHAT_STORE}', '{{not json')")
    page.reload()  # unreadable storage: an empty chat, no script error (the fixture checks)
    page.wait_for_function("() => document.querySelector('#model').options.length > 0")
    assert page.locator(".message").count() == 0


def assert_inert(pg) -> None:
    """Nothing in the messages became markup: no script, image, frame or svg element, no script ran,
    and every link is an http(s) one."""
    assert pg.locator("#messages script, #messages img, #messages iframe, #messages svg").count() == 0
    assert pg.evaluate("window.pwned") is None
    hrefs = pg.eval_on_selector_all("#messages a", "as => as.map(a => a.href)")
    assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs


def test_crafted_reply_in_storage_renders_as_text(page):
    chat = {"messages": [{"role": "user", "content": "<b>hi</b>"}, {"role": "assistant", "content": HOSTILE}],
            "system": "", "settings": {}, "model": "smol"}
    page.evaluate(f"localStorage.setItem('{CHAT_STORE}', {json.dumps(json.dumps(chat))})")
    page.reload()
    page.wait_for_selector(".message.assistant")
    assert_inert(page)
    text = page.inner_text("#messages")
    for literal in ("<b>hi</b>", "<script>window.pwned = 1</script>", "onerror=", "</code></pre><script>",
                    "<iframe src=x></iframe>", "<svg onload=x>", "link (javascript:window.pwned=3)"):
        assert literal in text, literal
    assert page.eval_on_selector_all("#messages a", "as => as.map(a => a.href)") == ["https://example.com/a"]
    assert page.inner_text(".message.assistant strong") == "bold <b>tag</b>"


def test_markdown_blocks_render_as_elements(page):
    text = "\n".join(["# Title", "Some *em*, **strong**, ~~old~~ and `code`.", "", "- one", "  - nested", "- two",
                      "", "3. three", "4. four", "", "> quoted", "", "| h1 | h2 |", "|:--|--:|", "| c1 | c2 |", "",
                      "---", "```", "unclosed fence while streaming"])
    chat = {"messages": [{"role": "user", "content": "md"}, {"role": "assistant", "content": text}]}
    page.evaluate(f"localStorage.setItem('{CHAT_STORE}', {json.dumps(json.dumps(chat))})")
    page.reload()
    md = page.wait_for_selector(".message.assistant .markdown")
    found = md.evaluate("""m => ({
        h: m.querySelector('h3')?.textContent, em: m.querySelector('em')?.textContent,
        strong: m.querySelector('strong')?.textContent, del: m.querySelector('del')?.textContent,
        code: m.querySelector('p code')?.textContent, nested: m.querySelector('ul ul li')?.textContent,
        items: [...m.querySelectorAll(':scope > ul > li')].length, start: m.querySelector('ol')?.start,
        quote: m.querySelector('blockquote')?.textContent.trim(),
        cells: [...m.querySelectorAll('th, td')].map(c => c.textContent), rule: !!m.querySelector('hr'),
        fence: m.querySelector('.code code')?.textContent})""")
    assert found == {"h": "Title", "em": "em", "strong": "strong", "del": "old", "code": "code", "nested": "nested",
                     "items": 2, "start": 3, "quote": "quoted", "cells": ["h1", "h2", "c1", "c2"], "rule": True,
                     "fence": "unclosed fence while streaming"}


def test_a_refused_request_shows_its_error_and_keeps_the_message(page):
    settings(page, temperature=5)
    page.fill("#input", "Hi")
    page.press("#input", "Enter")
    failed = page.wait_for_selector(".message.assistant.failed")
    assert "temperature" in failed.inner_text() and page.inner_text(".message.user") == "Hi"
    assert stored(page)["messages"][0]["content"] == "Hi"


def test_streamed_reply_with_a_script_tag_renders_as_text(page):
    settings(page, temperature=0, max_tokens=60)
    # fp32 and the default build both answer this with a script tag in a code block (greedy, 60 tokens)
    page.fill("#input", "Show me an HTML script tag that sets window.pwned=1.")
    page.press("#input", "Enter")
    wait_reply_done(page)
    content = stored(page)["messages"][1]["content"]
    assert "<script>" in content, f"the model did not emit a script tag this time: {content!r}"
    assert_inert(page)
    assert "<script>" in page.inner_text(".message.assistant .body")


def test_json_reply_format_is_enforced_and_rendered(page):
    """The settings' JSON format sends response_format json_object: the real server's constrained reply parses and
    renders as a JSON block, and the choice survives a reload."""
    settings(page, temperature=0, max_tokens=120)
    page.select_option("#format", "json")
    page.dispatch_event("#format", "change")
    page.fill("#input", "Describe a cat in JSON with keys name, color and age.")
    page.press("#input", "Enter")
    wait_reply_done(page)
    message = stored(page)["messages"][1]
    assert message["finish"] == "stop", message  # greedy, the default build: a 20-token object
    reply = json.loads(message["content"])
    assert isinstance(reply, dict) and reply
    code = page.wait_for_selector(".message.assistant .json code").inner_text()
    assert json.loads(code) == reply
    page.reload()
    assert page.input_value("#format") == "json"


def test_tool_calls_and_json_replies_render_as_blocks(page):
    """Rendering alone, on a fixed stream in OpenAI's chunk shape served by the browser (the real server's tool
    calls are tested in test_server_tools.py): a tool call's arguments and a JSON reply become inert blocks."""
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                  "arguments": "{\"city\": \"<script>window.pwned=1</script>\","}}]}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                  "arguments": " \"unit\": \"C\"}"}}]}, "finish_reason": "tool_calls"}]},
              {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 14, "total_tokens": 23}}]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=body))
    page.fill("#input", "Weather in Paris?")
    page.press("#input", "Enter")
    block = page.wait_for_selector(".message.assistant .tool-call")
    assert block.query_selector(".block-head").inner_text() == "tool call: get_weather"
    assert json.loads(block.query_selector("code").inner_text()) == {"city": "<script>window.pwned=1</script>",
                                                                     "unit": "C"}
    assert "14 tokens" in page.inner_text(".message.assistant .meta")
    assert stored(page)["messages"][1]["toolCalls"][0]["function"]["name"] == "get_weather"
    chat = {"messages": [{"role": "user", "content": "capital?"},
                         {"role": "assistant", "content": '{"city": "Paris", "tags": ["<img src=x>"]}'}]}
    page.evaluate(f"localStorage.setItem('{CHAT_STORE}', {json.dumps(json.dumps(chat))})")
    page.reload()
    code = page.wait_for_selector(".message.assistant .json code").inner_text()
    assert code == json.dumps({"city": "Paris", "tags": ["<img src=x>"]}, indent=2)
    assert_inert(page)


def test_api_key_prompt(browser, smol_server):
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    sent = []
    pg.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/v1/" in r.url else None)
    pg.goto(smol_server + "/")
    pg.wait_for_selector("#key-dialog[open]")
    assert "needs an API key" in pg.inner_text("#key-reason")
    pg.fill("#key", "wrong-key")
    pg.press("#key", "Enter")
    pg.wait_for_function("() => document.querySelector('#key-reason').textContent.includes('refused')")
    assert pg.is_visible("#key-dialog") and pg.locator("#model option").count() == 0
    pg.fill("#key", KEY)
    pg.press("#key", "Enter")
    pg.wait_for_function("() => document.querySelector('#model').options.length > 0")
    assert not pg.is_visible("#key-dialog")
    assert pg.evaluate("sessionStorage.getItem('llm-runtime.api-key')") == KEY
    assert pg.evaluate("localStorage.getItem('llm-runtime.api-key')") is None  # not remembered unless asked
    settings(pg, max_tokens=4)
    pg.fill("#input", "Hi")
    pg.press("#input", "Enter")
    pg.wait_for_selector(".message.assistant .meta:not(:empty)")
    assert sent[0] is None and sent[1] == "Bearer wrong-key" and sent[-1] == f"Bearer {KEY}", sent
    assert "4 tokens" in pg.inner_text(".message.assistant .meta")
    context.close()
