"""The /rankings page in real headless Chromium: it loads from the gateway alone and draws the chart."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.e2e.usage_helpers import FIXTURE_CONFIG, gateway_cli, write_fixture
from tests.support.png import hex_rgb, read_png
from tests.support.poll import poll
from tests.support.services import require_binary
from tests.usage.fixtures import WEEK_END

pytestmark = pytest.mark.browser

# The page's palette, in series order (gateway/web/rankings.js). Over the 8 weeks to WEEK_END the
# chart's series are qwen (2.5M), deepseek (900k), glm-5 (130k), kimi (45k), glm-4.6 (25k).
SERIES_COLOURS = ["#6366f1", "#f59e0b", "#10b981", "#ef4444", "#3b82f6"]


def chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    binary = require_binary("chromium")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--window-size=1280,1400",
    ]
    return subprocess.run([binary, *flags, *mode, url], capture_output=True, timeout=90)


@pytest.fixture
def ranked_gateway(start_gateway, tmp_path):
    gw = start_gateway(FIXTURE_CONFIG)
    done = gateway_cli(
        "usage",
        "import",
        str(write_fixture(tmp_path / "fixture.jsonl")),
        env={"GATEWAY_DATA_DIR": str(gw.dir / "data")},
    )
    assert done.returncode == 0, done.stderr
    return gw


def test_page_and_its_assets_are_served_by_the_gateway(ranked_gateway):
    page = httpx.get(ranked_gateway.url + "/rankings")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Everything it loads comes from the gateway itself: no CDN, no other host.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    for asset in ("/rankings/rankings.js", "/rankings/rankings.css"):
        assert httpx.get(ranked_gateway.url + asset).status_code == 200


def test_chromium_renders_the_rankings(ranked_gateway, tmp_path):
    url = f"{ranked_gateway.url}/rankings?end={WEEK_END}&window=week&granularity=week"
    with tempfile.TemporaryDirectory(prefix="gw-chromium-") as profile:
        dom = chromium(url, Path(profile), "--dump-dom")
    html = dom.stdout.decode()
    assert 'data-state="ready"' in html, dom.stderr.decode()[-2000:]
    leaderboard = html[html.index('id="leaderboard"') : html.index('id="others"')]
    assert (
        leaderboard.index("deepseek/deepseek-v3.2")
        < leaderboard.index("qwen/qwen3-32b")
        < leaderboard.index("moonshotai/kimi-k2.5")
    )
    assert "▲ 100.0%" in leaderboard and "▼ 25.0%" in leaderboard  # week-over-week change
    assert re.search(r'id="category".*<option value="programming">', html)
    assert "https://cline.bot" in html or "Cline" in html
    assert len(re.findall(r"<rect ", html)) >= 4 + 5  # one stacked segment per model and week with tokens

    shot = tmp_path / "rankings.png"
    with tempfile.TemporaryDirectory(prefix="gw-chromium-") as profile:
        done = chromium(url, Path(profile), f"--screenshot={shot}")
    assert shot.exists(), done.stderr.decode()[-2000:]
    image = read_png(str(shot))
    # The chart card is the first thing under the header: count its pixels of each series' colour.
    counts = image.colour_counts((0, 100, image.width, 560))
    found = {colour: counts[hex_rgb(colour)] for colour in SERIES_COLOURS}
    # Legend swatches are 10x10 px: only drawn bars reach these areas.
    assert found["#6366f1"] > 5000 and found["#f59e0b"] > 2000, found
    assert all(n > 100 for n in found.values()), found


def test_a_gateway_with_keys_asks_for_one_instead_of_failing_silently(start_gateway):
    gw = start_gateway(FIXTURE_CONFIG, env={"GATEWAY_API_KEYS": "ops:sk-ops"})
    with tempfile.TemporaryDirectory(prefix="gw-chromium-") as profile:
        dom = chromium(gw.url + "/rankings", Path(profile), "--dump-dom")
    html = dom.stdout.decode()
    assert 'data-state="error"' in html, dom.stderr.decode()[-2000:]
    assert re.search(r'<div id="key-prompt" class="card notice">', html)  # shown: no `hidden`


# -- states a page must show, driven over the DevTools protocol -----------------------------

LEADERS = ["deepseek/deepseek-v3.2", "qwen/qwen3-32b", "moonshotai/kimi-k2.5", "z-ai/glm-5", "z-ai/glm-4.6"]
LEADERBOARD_NAMES = (
    '[...document.querySelectorAll("#leaderboard li .name")].map((n) => n.firstChild.nodeType === 3 ? '
    "n.firstChild.textContent : n.childNodes[1].textContent)"
)
STATE = "document.body.dataset.state"


@pytest.fixture
def browser():
    from tests.web.browser import Browser

    chrome = Browser()
    yield chrome
    chrome.close()


class HeldRankings:
    """The gateway behind a front that holds every /v1/rankings* request until `release`:
    the page can be looked at while its data is still on the way."""

    def __init__(self, gateway_url: str) -> None:
        import asyncio
        import threading

        from tests.support.ports import free_port
        from tests.support.threaded_server import ThreadedServer

        self.release = threading.Event()
        self.held = 0

        async def app(scope, receive, send):
            if scope["path"].startswith("/v1/rankings"):
                self.held += 1
                while not self.release.is_set():
                    await asyncio.sleep(0.02)
            query = scope["query_string"].decode()
            headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() == b"authorization"}
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"{gateway_url}{scope['path']}?{query}", headers=headers)
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status_code,
                    "headers": [(b"content-type", answer.headers["content-type"].encode())],
                }
            )
            await send({"type": "http.response.body", "body": answer.content})

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = ThreadedServer(app, port, "held rankings")


def test_the_page_says_it_is_loading_until_the_rankings_arrive(ranked_gateway, browser):
    front = HeldRankings(ranked_gateway.url)
    try:
        browser.goto(f"{front.url}/rankings?end={WEEK_END}")
        browser.wait_for(f'{STATE} === "loading"')
        poll(lambda: front.held == 2, what="both rankings requests to be held")
        assert browser.evaluate(
            '[document.getElementById("loading").hidden, document.getElementById("loading").textContent,'
            ' document.getElementById("leaderboard").children.length]'
        ) == [False, "Loading the rankings…", 0]
        front.release.set()
        browser.wait_for(f'{STATE} === "ready"')
        assert browser.evaluate('document.getElementById("loading").hidden') is True
        assert browser.evaluate(LEADERBOARD_NAMES) == LEADERS
    finally:
        front.release.set()
        front.server.stop()


def test_an_unknown_window_falls_back_to_the_default_and_says_so(ranked_gateway, browser):
    browser.goto(f"{ranked_gateway.url}/rankings?end={WEEK_END}&window=year&granularity=hourly")
    browser.wait_for(f'{STATE} === "ready" || {STATE} === "error"')
    assert browser.evaluate(STATE) == "ready"
    form = 'document.getElementById("controls").elements'
    assert browser.evaluate(f"[{form}.window.value, {form}.granularity.value]") == ["week", "week"]
    assert browser.evaluate(
        '[document.getElementById("notice").hidden, document.getElementById("notice").textContent]'
    ) == [
        False,
        "Unknown window “year”: showing week instead. Unknown chart “hourly”: showing weekly instead.",
    ]
    assert browser.evaluate("location.search") == f"?window=week&granularity=week&end={WEEK_END}"
    assert browser.evaluate('document.getElementById("window-caption").textContent') == (
        "2025-03-10 – 2025-03-16 vs previous 7 days"
    )
    assert browser.evaluate(LEADERBOARD_NAMES) == LEADERS


def test_models_whose_calls_all_failed_are_left_out_of_the_leaderboard(start_gateway, tmp_path, browser):
    from gateway.usage.jsonl import event_line
    from tests.usage.fixtures import _event

    gw = start_gateway(FIXTURE_CONFIG)
    path = write_fixture(tmp_path / "fixture.jsonl")
    failed = _event("f1", "2025-03-12T10:00:00", "mistralai/failed-only", "mistral", 0, 0, status=502)
    path.write_bytes(path.read_bytes() + event_line(failed))
    done = gateway_cli("usage", "import", str(path), env={"GATEWAY_DATA_DIR": str(gw.dir / "data")})
    assert done.returncode == 0, done.stderr

    api = httpx.get(gw.url + "/v1/rankings", params={"window": "week", "end": WEEK_END}).json()
    assert [m["model"] for m in api["models"]] == LEADERS
    assert api["others"]["models"] == 0
    assert api["totals"]["failed"] == 2  # the fixture's failed qwen call and this one: counted, not ranked
    browser.goto(f"{gw.url}/rankings?end={WEEK_END}")
    browser.wait_for(f'{STATE} === "ready"')
    assert browser.evaluate(LEADERBOARD_NAMES) == LEADERS
    for ranked in ("leaderboard", "authors", "category-leaders", "legend"):
        assert "mistral" not in browser.evaluate(f'document.getElementById("{ranked}").textContent'), ranked
    # Its failed call still shows where failures belong: the per-provider table, with its request.
    assert "mistralai/failed-only" in browser.evaluate('document.getElementById("throughput").textContent')


def test_the_api_key_is_kept_for_the_tab_only_and_never_in_a_url(start_gateway, browser):
    gw = start_gateway(FIXTURE_CONFIG, env={"GATEWAY_API_KEYS": "ops:sk-ops"})
    url = f"{gw.url}/rankings?end={WEEK_END}"
    browser.goto(url)
    browser.wait_for(f'{STATE} === "error"')
    browser.evaluate('localStorage.setItem("gateway-rankings-key", "sk-from-an-earlier-version")')
    browser.goto(url)  # an earlier version's copy in localStorage is removed
    browser.wait_for(f'{STATE} === "error"')
    assert browser.evaluate('localStorage.getItem("gateway-rankings-key")') is None
    assert browser.evaluate('document.getElementById("key-prompt").hidden') is False
    # Even submitted without the script, the form has nothing to put in a URL.
    assert browser.evaluate('[...new FormData(document.getElementById("key-form")).keys()].length') == 0

    browser.evaluate(
        'document.getElementById("key-input").value = "sk-ops";'
        'document.getElementById("key-form").requestSubmit(); true'
    )
    browser.wait_for(f'{STATE} === "ready"')
    assert browser.evaluate(
        '[sessionStorage.getItem("gateway-rankings-key"), localStorage.getItem("gateway-rankings-key")]'
    ) == ["sk-ops", None]
    assert "sk-ops" not in browser.evaluate("location.href")
    assert (
        browser.evaluate("performance.getEntriesByType('resource').filter((r) => r.name.includes('sk-ops')).length")
        == 0
    )

    browser.goto(url)  # a reload in the same tab keeps the key
    browser.wait_for(f'{STATE} === "ready" || {STATE} === "error"')
    assert browser.evaluate(STATE) == "ready"


def test_the_throughput_table_shows_each_providers_uptime_fallbacks_included(start_gateway, tmp_path, browser):
    """Uptime counts every attempt: a provider that failed before another answered (a row of
    its own in the ledger, not a request) shows in the table with its failures."""
    from dataclasses import replace

    from gateway.usage.jsonl import event_line
    from tests.usage.fixtures import _event

    gw = start_gateway(FIXTURE_CONFIG)
    path = write_fixture(tmp_path / "fixture.jsonl")
    answered = _event("c1-2", "2025-03-13T09:00:00", "deepseek/deepseek-v3.2", "deepseek", 0, 0)
    answered = replace(answered, call_id="c1", attempt=2, attempts=2)
    failed = replace(answered, id="c1-1", backend="flaky", attempt=1, final=False, status=503, error="http_503")
    path.write_bytes(path.read_bytes() + event_line(failed) + event_line(answered))
    done = gateway_cli("usage", "import", str(path), env={"GATEWAY_DATA_DIR": str(gw.dir / "data")})
    assert done.returncode == 0, done.stderr

    api = httpx.get(gw.url + "/v1/rankings", params={"window": "week", "end": WEEK_END}).json()
    assert [m["model"] for m in api["models"]] == LEADERS  # the failed attempt ranks nothing
    uptime = {(t["backend"], t["model"]): (t["attempts"], t["attempts_failed"], t["uptime"]) for t in api["throughput"]}
    assert uptime[("deepseek", "deepseek/deepseek-v3.2")] == (3, 0, 1.0)  # w1, w2 and the fallback's answer
    assert uptime[("flaky", "deepseek/deepseek-v3.2")] == (1, 1, 0.0)
    assert uptime[("groq", "qwen/qwen3-32b")] == (2, 1, 0.5)  # the fixture's 502 counts against groq

    browser.goto(f"{gw.url}/rankings?end={WEEK_END}")
    browser.wait_for(f'{STATE} === "ready"')
    table = 'document.getElementById("throughput")'
    assert browser.evaluate(f"[...{table}.tHead.rows[0].cells].map((c) => c.textContent).at(-1)") == "Uptime"
    shown = browser.evaluate(
        f"Object.fromEntries([...{table}.tBodies[0].rows].map((r) => "
        "[r.cells[0].textContent + ' on ' + r.cells[1].textContent, [r.cells[r.cells.length - 1].textContent, "
        "r.cells[r.cells.length - 1].title]]))"
    )
    assert shown["deepseek/deepseek-v3.2 on deepseek"] == ["100.0%", "3 of 3 attempts answered"]
    assert shown["deepseek/deepseek-v3.2 on flaky"] == ["0.0%", "0 of 1 attempts answered"]
    assert shown["qwen/qwen3-32b on groq"] == ["50.0%", "1 of 2 attempts answered"]
