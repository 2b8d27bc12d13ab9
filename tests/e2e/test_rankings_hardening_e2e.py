"""The rankings API rejects dates whose windows would start before year 1 as bad parameters
(not as a store outage), and the rankings page is served with a strict CSP and no framing."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.policies import one_backend_policy

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


@pytest.fixture
def gw(start_gateway, upstream):
    return start_gateway(one_backend_policy(upstream.base_url))


TOO_EARLY = [
    "/v1/rankings?end=0001-01-01",
    "/v1/rankings?window=day&end=0001-01-01",
    "/v1/rankings?window=week&end=0001-01-15",
    "/v1/rankings?window=month&end=0001-03-01",
    "/v1/rankings/series?end=0001-01-01",
    "/v1/rankings/series?granularity=day&periods=120&end=0001-03-01",
    "/v1/rankings/series?granularity=week&periods=120&end=0001-12-31",
]


def test_an_end_date_too_early_for_its_window_is_a_400_naming_end(gw):
    for path in TOO_EARLY:
        response = httpx.get(gw.url + path)
        assert response.status_code == 400, path
        end = path.rsplit("end=", 1)[1]
        assert response.json() == {
            "error": {
                "message": f"`end` {end} is too early: the days this query reads would start before 0001-01-01.",
                "type": "invalid_request_error",
                "param": "end",
                "code": "invalid_value",
            }
        }
    assert "usage store read failed" not in gw.log()
    # Year-1 dates whose windows fit still answer.
    for path in (
        "/v1/rankings?window=day&end=0001-01-15",
        "/v1/rankings/series?granularity=day&periods=14&end=0001-01-15",
    ):
        response = httpx.get(gw.url + path)
        assert response.status_code == 200, response.text


def test_the_page_and_its_files_forbid_framing_sniffing_and_foreign_content(gw):
    for path, media in (
        ("/rankings", "text/html"),
        ("/rankings/rankings.js", "text/javascript"),
        ("/rankings/rankings.css", "text/css"),
    ):
        response = httpx.get(gw.url + path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    # What the CSP forbids, the page must not use: every script and stylesheet is a file.
    html = httpx.get(gw.url + "/rankings").text
    assert html.count("<script") == 1 and '<script src="/rankings/rankings.js"></script>' in html
    assert "<style" not in html and not re.search(r"<[^>]*\s(style|on[a-z]+)=", html)


def test_json_answers_say_nosniff(gw):
    chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    for method, path, body in (
        ("GET", "/v1/models", None),
        ("GET", "/v1/rankings", None),
        ("GET", "/health", None),
        ("POST", "/v1/chat/completions", chat),
    ):
        response = httpx.request(method, gw.url + path, json=body)
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
        assert response.headers["x-content-type-options"] == "nosniff", path
