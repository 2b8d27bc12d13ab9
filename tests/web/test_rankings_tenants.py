"""The /rankings page in headless Chromium for two tenants: bob's page never shows alice's key,
app, title or volumes; the admin's page offers key and team filters and follows them."""

from __future__ import annotations

import pytest

from tests.tenants.visibility import (
    ADMIN,
    ALICE_APP,
    ALICE_CALLS,
    ALICE_TITLE,
    BOB_CALLS,
    BOB_TITLE,
    PER_CALL,
    two_tenants,
)

pytestmark = pytest.mark.browser
STATE = "document.body.dataset.state"
TEXT = "document.body.innerText + document.documentElement.outerHTML"
LEADER_TOKENS = '[...document.querySelectorAll("#leaderboard li .tokens")].map((n) => n.textContent)'
APP_NAMES = '[...document.querySelectorAll("#apps li .name")].map((n) => n.textContent)'


@pytest.fixture
def browser():
    from tests.web.browser import Browser

    chrome = Browser()
    yield chrome
    chrome.close()


def sign_in(browser, url: str, key: str) -> None:
    browser.goto(url)
    browser.wait_for(f'{STATE} === "error"')  # the gateway has keys: the page asks for one
    browser.evaluate(
        f'document.getElementById("key-input").value = "{key}";'
        'document.getElementById("key-form").requestSubmit(); true'
    )
    browser.wait_for(f'{STATE} === "ready"')


def test_bobs_page_never_shows_alices_traffic(start_gateway, upstream, tmp_path, browser):
    t = two_tenants(start_gateway, upstream, tmp_path / "data")
    sign_in(browser, f"{t.gw.url}/rankings?window=day&granularity=day", t.bob)
    page = browser.evaluate(TEXT)
    for secret in ("alice", ALICE_APP, "alice-internal", ALICE_TITLE, "secret-project"):
        assert secret not in page, secret
    assert browser.evaluate(LEADER_TOKENS) == [str(BOB_CALLS * PER_CALL)]  # bob's volume, not the gateway's
    assert browser.evaluate(APP_NAMES) == [BOB_TITLE + "https://bob.example/tools"]
    assert browser.evaluate('document.getElementById("scope").textContent') == "Your key's own traffic (bob)."
    assert browser.evaluate('document.getElementById("admin-filters").hidden') is True

    # Typing another tenant into the address bar gets a refusal, not her data.
    browser.goto(f"{t.gw.url}/rankings?window=day&key=alice")
    browser.wait_for(f'{STATE} === "error"')
    assert "admin key" in browser.evaluate('document.getElementById("error").textContent')
    assert ALICE_TITLE not in browser.evaluate(TEXT)


def test_the_admins_page_sees_everyone_and_filters_by_key_and_team(start_gateway, upstream, tmp_path, browser):
    t = two_tenants(start_gateway, upstream, tmp_path / "data")
    sign_in(browser, f"{t.gw.url}/rankings?window=day&granularity=day", ADMIN)
    assert browser.evaluate('document.getElementById("admin-filters").hidden') is False
    assert browser.evaluate(LEADER_TOKENS) == [str((ALICE_CALLS + BOB_CALLS) * PER_CALL)]
    assert browser.evaluate('document.getElementById("scope").textContent') == "All traffic on this gateway."

    browser.evaluate(
        'const f = document.getElementById("controls"); f.elements.key.value = "alice";'
        'f.dispatchEvent(new Event("change")); true'
    )
    browser.wait_for(f'{STATE} === "ready" && document.getElementById("scope").textContent === "Traffic of key alice."')
    assert browser.evaluate(LEADER_TOKENS) == [str(ALICE_CALLS * PER_CALL)]
    assert browser.evaluate(APP_NAMES) == [ALICE_TITLE + ALICE_APP]
    assert "key=alice" in browser.evaluate("location.search")

    browser.goto(f"{t.gw.url}/rankings?window=day&granularity=day&team=blue")
    browser.wait_for(f'{STATE} === "ready"')
    assert browser.evaluate('document.getElementById("controls").elements.team.value') == "blue"
    assert browser.evaluate(LEADER_TOKENS) == [str(BOB_CALLS * PER_CALL)]
    assert ALICE_TITLE not in browser.evaluate(TEXT)
