"""A client that leaves mid-call gives its key's in-flight slot (`max_concurrent`) back at
once, whether it leaves mid-stream or before the answer's first byte: not when the upstream
would have finished."""

from __future__ import annotations

import time

import httpx

from tests.support.policies import one_backend_policy
from tests.support.poll import poll
from tests.tenants.support import bearer, create_key

ASK = {"model": "auto", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 50}


def test_a_client_leaving_mid_stream_or_before_the_answer_frees_its_key_slot(start_gateway, upstream, tmp_path):
    data = tmp_path / "data"
    key = create_key("one-at-a-time", "--max-concurrent", "1", data_dir=data)
    gw = start_gateway(one_backend_policy(upstream.base_url), env={"GATEWAY_DATA_DIR": str(data)})
    url = gw.url + "/v1/chat/completions"

    upstream.reset(chunk_delay_s=0.5)  # a slow stream
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url, json={**ASK, "stream": True}, headers=bearer(key)) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()  # kept: a dropped iterator closes the stream
            next(chunks)  # the first bytes; the call is in flight
            busy = httpx.post(url, json=ASK, headers=bearer(key), timeout=30)
            assert busy.status_code == 429 and "max_concurrent" in busy.json()["error"]["message"]
        # ...and the client leaves mid-stream.
    upstream.reset()
    poll(
        lambda: httpx.post(url, json=ASK, headers=bearer(key), timeout=30).status_code == 200,
        what="the slot back",
        timeout=5,
    )

    upstream.reset(delay_s=3.0)  # leave before any answer
    try:
        httpx.post(url, json=ASK, headers=bearer(key), timeout=0.5)
    except httpx.ReadTimeout:
        pass
    upstream.reset()
    started = time.monotonic()
    poll(
        lambda: httpx.post(url, json=ASK, headers=bearer(key), timeout=30).status_code == 200,
        what="the slot back",
        timeout=5,
    )
    assert time.monotonic() - started < 2.0  # not after the upstream's 3 s
