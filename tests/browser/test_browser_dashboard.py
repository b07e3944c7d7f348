"""The dashboard in a real browser: Playwright (the Python package) driving Debian's chromium-headless-shell
(`playwright install` cannot download browsers here) against a real `kolo serve` running a real job on the tiny
model. A screenshot of every page is saved under the test's tmp folder (the path is printed).
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "server"))
sys.path.insert(0, str(TESTS / "e2e"))

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture()
def served(data_root: Path, kolo, tiny_model: Path):
    pytest.importorskip("fastapi", reason="kolo serve needs the server extra (pip install -e 'host[server]')")
    from server_helpers import Server
    from train_helpers import QA, setup_root

    setup_root(data_root, tiny_model)
    csv = data_root.parent / "qa.csv"
    csv.write_text("prompt,completion\n" + "".join(f"{json.dumps(q)},{json.dumps(a)}\n" for q, a in QA))
    srv = Server(kolo, data_root, [])
    srv.start()
    yield srv, csv
    srv.stop()


def test_upload_create_watch_reload_download(browser, served, tmp_path: Path) -> None:
    srv, csv = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    page = browser.new_page(accept_downloads=True)
    page.set_default_timeout(30_000)

    page.goto(srv.url + "/")
    assert page.url.endswith("/login")
    page.screenshot(path=str(shots / "login.png"), full_page=True)
    page.fill("#key", srv.key)
    page.click("button[type=submit]")
    page.wait_for_url("**/jobs")

    page.goto(srv.url + "/datasets")
    page.set_input_files("#file", str(csv))
    page.click("form button[type=submit]")
    assert page.text_content("#uploaded-rows") == "8"
    assert page.locator("#datasets td.rows").first.text_content() == "8"
    page.screenshot(path=str(shots / "datasets.png"), full_page=True)
    page.click("#uploaded a")
    assert page.text_content("#rows") == "8"
    page.screenshot(path=str(shots / "dataset.png"), full_page=True)

    page.goto(srv.url + "/jobs")
    page.fill("#name", "browser job")
    page.select_option("#training_type", "standard")
    page.fill("#model_name", "models/tiny")
    for name, value in {"epochs": "60", "batch_size": "4", "learning_rate": "0.002", "warmup_steps": "1",
                        "logging_steps": "1", "max_seq_length": "128", "save_steps": "1000"}.items():
        page.fill(f"#opt-{name}", value)
    page.screenshot(path=str(shots / "jobs.png"), full_page=True)
    page.click("#create")
    page.wait_for_url("**/jobs/1")

    # live: the SSE stream moves the progress bar; after a reload the progress is still there
    page.wait_for_function("Number(document.querySelector('#step')?.textContent || 0) >= 3", timeout=240_000)
    page.screenshot(path=str(shots / "job-running.png"), full_page=True)
    before = int(page.text_content("#step"))
    page.reload()
    assert int(page.text_content("#step")) >= before
    assert page.locator("#loss-chart polyline").count() == 1
    page.wait_for_function("document.querySelector('#status')?.textContent === 'completed'", timeout=600_000)
    assert page.text_content("#step") == "120"
    page.screenshot(path=str(shots / "job-completed.png"), full_page=True)

    page.reload()  # the actions of a completed job
    with page.expect_download() as dl:
        page.click("#download")
    archive = tmp_path / "run.tar.gz"
    dl.value.save_as(str(archive))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "job-1/kolo.json" in names and "job-1/model/config.json" in names
    assert page.get_attribute("#chat", "href") == "/runs/job-1/chat"  # the chat page (tests/browser/test_browser_chat)
    page.goto(srv.url + "/jobs")
    assert page.locator("#jobs .status").first.text_content() == "completed"
    page.screenshot(path=str(shots / "jobs-after.png"), full_page=True)
    assert len(list(shots.glob("*.png"))) == 7
