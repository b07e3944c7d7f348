"""`kolo chat RUN --web` in a real browser: Playwright (the Python package) driving Debian's chromium-headless-shell
(as in test_browser_dashboard.py) against the real verb serving a real exported run of the tiny model
(tests/server/test_chat_api.py makes it). The page asks for the key once and comes back to the chat; a message gets
an answer that streams in piece by piece and stops at the Modelfile's stop string; the conversation is saved and
shown again after a reload. Screenshots are saved under the test's tmp folder (the path is printed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "server"))
sys.path.insert(0, str(TESTS / "e2e"))

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.e2e, pytest.mark.slow]

#: Records every text the answer bubble takes while it streams: each update replaces the bubble's text node, and a
#: MutationObserver sees each replaced node (even when several pieces arrive in one network read).
WATCH = """() => { window.__updates = []; new MutationObserver((records) => { for (const r of records) {
  const t = r.target;
  if (!t.classList || !t.classList.contains('text') || !t.parentElement.classList.contains('assistant')) continue;
  for (const n of r.addedNodes) if (n.nodeType === 3) window.__updates.push(n.data);
}}).observe(document.querySelector('#messages'), {subtree: true, childList: true}); }"""


@pytest.fixture()
def web(tmp_path: Path, tiny_model: Path, make_kolo):
    pytest.importorskip("fastapi", reason="kolo chat --web needs the server extra (pip install -e 'host[server]')")
    from test_chat_api import exported_root, web_chat

    root = exported_root(tmp_path, tiny_model)
    w = web_chat(make_kolo(root, tmp_path), root)
    yield w
    w.stop()


def test_send_a_message_and_see_it_stream_and_stop(browser, web, tmp_path: Path) -> None:
    from test_chat_api import ANSWERS, RUN
    from train_helpers import QA

    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    page = browser.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{web.url}/runs/{RUN}/chat")
    assert "/login?next=" in page.url
    page.fill("#key", web.key)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/runs/{RUN}/chat")
    page.screenshot(path=str(shots / "chat-empty.png"), full_page=True)

    question = QA[2][0]
    page.fill("#temperature", "0")
    page.fill("#message", question)
    page.evaluate(WATCH)
    page.click("#send")
    page.wait_for_selector(".msg.assistant[data-done='1']")
    answer = page.locator(".msg.assistant .text").last.text_content()
    updates = page.evaluate("window.__updates")
    page.screenshot(path=str(shots / "chat-answered.png"), full_page=True)
    # the trained reply, nothing of the stop string <|im_end|> or after it
    assert answer == ANSWERS[question] and "<|im_end|>" not in answer
    # it streamed: the text grew through several partial states before the whole answer
    partial = [u for u in dict.fromkeys(updates) if u and u != answer]
    assert len(partial) >= 2 and all(answer.startswith(p) for p in partial), updates
    assert page.locator(".msg.user .text").last.text_content() == question

    # saved in the run folder, and shown again after a reload (the URL names the conversation)
    assert "?c=" in page.url
    chat_id = page.url.split("?c=")[1]
    saved = json.loads((web.root / "outputs" / RUN / "chats" / f"{chat_id}.json").read_text())
    assert [m["content"] for m in saved["messages"]] == [question, answer]
    page.reload()
    assert page.locator(".msg.assistant .text").last.text_content() == answer
    assert page.locator("#chats a").first.text_content() == question
    page.screenshot(path=str(shots / "chat-reloaded.png"), full_page=True)
    assert len(list(shots.glob("*.png"))) == 3
