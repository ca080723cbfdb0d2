"""The page at ``/`` in headless Chromium, driven over the DevTools protocol: streaming, Stop, the gate view."""

import json
import time

import pytest

from browser import CHROMIUM, Browser
from running_server import serve_models

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")

PROMPT = "ROMEO:\nBut soft"


@pytest.fixture(scope="module")
def server(tiny_model):
    """A server over the tiny model, named "tiny", with the default limits."""
    running = serve_models({"tiny": tiny_model})
    yield running
    running.close()


def wait_until(probe, what: str, timeout: float = 20.0, interval: float = 0.02, accept=bool):
    """Call ``probe`` until ``accept`` takes what it returns, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def browser(tmp_path):
    running = Browser(tmp_path / "profile")
    yield running
    running.close()


class Page:
    """The textgen page's controls, as the test reads and sets them."""

    def __init__(self, browser: Browser):
        self.browser = browser

    def set(self, field: str, value: str):
        # As typing does: the value changes, then input and change events fire.
        self.browser.evaluate(f"""(() => {{
            const field = document.getElementById({json.dumps(field)});
            field.focus();
            field.value = {json.dumps(value)};
            field.dispatchEvent(new Event("input", {{ bubbles: true }}));
            field.dispatchEvent(new Event("change", {{ bubbles: true }}));
        }})()""")

    def click(self, button: str):
        self.browser.evaluate(f"document.getElementById({json.dumps(button)}).click()")

    def text(self) -> str:
        return self.browser.evaluate("document.getElementById('output').textContent")

    def status(self) -> str:
        return self.browser.evaluate("document.getElementById('status').textContent")

    def enabled(self) -> dict:
        return self.browser.evaluate("({generate: !document.getElementById('generate').disabled,"
                                     " stop: !document.getElementById('stop').disabled})")

    def gates(self) -> dict | None:
        """The inspect report in the gates iframe: its tokens and how many token spans its script drew."""
        return self.browser.evaluate("""(() => {
            const page = document.getElementById("gates").contentDocument;
            const data = page && page.getElementById("trace-data");
            if (!data) return null;
            return {tokens: JSON.parse(data.textContent).tokens, spans: page.querySelectorAll("span.tok").length};
        })()""")


def rows_in_loop(server) -> tuple[int, int]:
    health = server.client.get("/health").json()
    return health["models"]["tiny"]["active_rows"], health["open_requests"]


def test_page_streams_stops_and_shows_the_gates(server, browser):
    page = Page(browser)
    browser.call("Page.navigate", url=server.url + "/")
    wait_until(lambda: browser.evaluate("[...document.querySelectorAll('#model option')].map(o => o.value)")
               == ["tiny"], "the model picker to list the served model")
    assert "serving tiny" in browser.evaluate("document.querySelector('header').textContent")
    assert page.enabled() == {"generate": True, "stop": False}

    # A long run, streamed piece by piece, then stopped.
    page.set("prompt", PROMPT)
    page.set("seed", "1234")
    page.set("length", "2000")
    page.set("temperature", "0.5")
    page.click("generate")
    first = wait_until(page.text, "the first streamed text", accept=lambda text: len(text) > len(PROMPT))
    second = wait_until(page.text, "more streamed text", accept=lambda text: len(text) > len(first))
    assert first.startswith(PROMPT) and second.startswith(first)  # pieces are appended in order
    assert page.status() == "streaming\u2026" and page.enabled() == {"generate": False, "stop": True}
    assert rows_in_loop(server) == (1, 1)  # the page's row is in the loop now

    page.click("stop")
    status = wait_until(page.status, "the stopped status", accept=lambda text: text.startswith("stopped"))
    stopped = page.text()
    generated = len(stopped) - len(PROMPT)
    assert len(second) <= len(stopped) < len(PROMPT) + 2000  # stopped before the run could end
    assert status == f"stopped after {generated} characters, seed 1234"
    assert page.enabled() == {"generate": True, "stop": False}
    wait_until(lambda: rows_in_loop(server) == (0, 0), "the stopped row to leave the loop", timeout=10)
    report = wait_until(page.gates, "the gate view of the stopped text",
                        accept=lambda found: found is not None and "".join(found["tokens"]) == stopped)
    assert report["spans"] == len(report["tokens"])
    assert page.text() == stopped  # nothing arrived after Stop, up to a gate view later

    # A short run to its end: the page shows exactly what the non-streaming API returns for the same settings.
    page.set("seed", "99")
    page.set("length", "40")
    page.click("generate")
    status = wait_until(page.status, "the run to finish", accept=lambda text: text.startswith("done"))
    expected = server.client.post("/v1/generate", json={"model": "tiny", "prompt": PROMPT, "length": 40,
                                                         "temperature": 0.5, "top_k": 0, "top_p": 1.0, "seed": 99})
    assert expected.status_code == 200, expected.text
    sample = expected.json()["samples"][0]
    assert sample["num_tokens"] == 40
    assert page.text() == PROMPT + sample["text"]
    assert status == "done: 40 tokens, seed 99"
    report = wait_until(page.gates, "the gate view of the finished text",
                        accept=lambda found: found is not None and "".join(found["tokens"]) == PROMPT + sample["text"])
    assert report["spans"] == len(report["tokens"]) == len(PROMPT) + 40  # one span per character token

    # A refusal shows the server's own message, and the page stays usable.
    page.set("length", "5000")
    page.click("generate")
    message = wait_until(lambda: browser.evaluate(
        "document.getElementById('status').classList.contains('error') && "
        "document.getElementById('status').textContent"), "the refusal's message")
    assert message.startswith("length must be at most 2000 on this server")
    assert page.enabled() == {"generate": True, "stop": False}
    assert rows_in_loop(server) == (0, 0)


def test_page_sends_the_api_key_it_keeps(server, browser):
    # A second server over the same model, that wants a key.
    keyed = serve_models({"tiny": server.served[0].model}, api_key="sesame")
    try:
        page = Page(browser)
        browser.evaluate("window.beforeNavigate = true")  # marks the old document, so the wait sees the new one
        browser.call("Page.navigate", url=keyed.url + "/")
        wait_until(lambda: browser.evaluate("!window.beforeNavigate && document.readyState === 'complete' && "
                                            "document.getElementById('status') !== null"),
                   "the keyed server's page to load")
        message = wait_until(page.status, "the refusal without a key", accept=lambda text: text != "")
        assert message.startswith("a valid API key is needed")
        assert browser.evaluate("document.querySelectorAll('#model option').length") == 0

        page.set("api_key", "sesame")
        wait_until(lambda: browser.evaluate("[...document.querySelectorAll('#model option')].map(o => o.value)")
                   == ["tiny"], "the model picker to fill once the key is given")
        assert page.status() == ""  # the refusal's message is gone
        page.set("prompt", PROMPT)
        page.set("length", "12")
        page.set("seed", "5")
        page.click("generate")
        status = wait_until(page.status, "the keyed run to finish", accept=lambda text: text.startswith("done"))
        assert status == "done: 12 tokens, seed 5" and len(page.text()) == len(PROMPT) + 12
        wait_until(page.gates, "the gate view through the key", accept=lambda found: found is not None)

        # The key outlives a reload: the page reads it back and is let in at once.
        browser.evaluate("window.beforeReload = true")  # marks the old document, so the wait sees the new one
        browser.call("Page.reload")
        wait_until(lambda: browser.evaluate("!window.beforeReload && document.readyState === 'complete' && "
                                            "document.getElementById('api_key').value === 'sesame' && "
                                            "document.querySelectorAll('#model option').length === 1"),
                   "the kept key to open the model list after a reload")
    finally:
        keyed.close()
