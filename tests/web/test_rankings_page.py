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
