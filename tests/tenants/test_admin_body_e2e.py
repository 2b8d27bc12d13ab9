"""/admin's request bodies are bounded as they arrive: a body past `MAX_ADMIN_BODY` is refused
with a 413 while the client is still sending it, and a declared length past it before a byte
of the body is read. Driven over a raw socket against a real gateway, since what is checked
is when the answer comes: the body is never finished, so only a gateway that stopped reading
at the bound can answer 413 (one that buffers the whole body first waits for the rest, and
its body timeout ends the wait with a 408)."""

from __future__ import annotations

import socket

import orjson

from gateway.api.keys import MAX_ADMIN_BODY
from tests.support.policies import one_backend_policy

ADMIN_KEY = "sk-admin-body"
PATIENCE_S = 60.0  # past the gateway's 30 s body timeout: a gateway waiting for the body answers 408 first


def _answer(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the one answer on `sock`, read by its content-length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, body
        body += chunk
    return int(lines[0].split()[1]), orjson.loads(body[:length])


def _post_head(gw, key: str | None, *framing: str) -> bytes:
    lines = ["POST /admin/keys HTTP/1.1", "host: gw", "content-type: application/json", *framing]
    if key is not None:
        lines.append(f"authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _unfinished_chunked(gw, key: str | None) -> tuple[int, dict]:
    """One byte past the bound, in 8 KiB chunks, and never the chunk that ends the body."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=PATIENCE_S)
    try:
        sock.sendall(_post_head(gw, key, "transfer-encoding: chunked"))
        left = MAX_ADMIN_BODY + 1
        while left:
            size = min(left, 8192)
            sock.sendall(b"%x\r\n%s\r\n" % (size, b" " * size))
            left -= size
        return _answer(sock)
    finally:
        sock.close()


def _declared_too_long(gw) -> tuple[int, dict]:
    """A content-length past the bound, and no body at all."""
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=PATIENCE_S)
    try:
        sock.sendall(_post_head(gw, ADMIN_KEY, f"content-length: {MAX_ADMIN_BODY + 1}"))
        return _answer(sock)
    finally:
        sock.close()


def test_an_admin_body_past_the_bound_is_refused_before_the_client_finishes_it(start_gateway, upstream, tmp_path):
    gw = start_gateway(
        one_backend_policy(upstream.base_url),
        env={"GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_DATA_DIR": str(tmp_path / "data")},
    )
    status, body = _unfinished_chunked(gw, ADMIN_KEY)
    assert (status, body["error"]["code"]) == (413, "request_too_large"), body
    assert body["error"]["message"] == f"Request body exceeds the limit of {MAX_ADMIN_BODY} bytes."

    status, body = _declared_too_long(gw)
    assert (status, body["error"]["code"]) == (413, "request_too_large"), body
    assert body["error"]["message"] == f"Request body is {MAX_ADMIN_BODY + 1} bytes; the limit is {MAX_ADMIN_BODY}."

    # Without the admin key, the body is not read at all: the 401 comes first.
    status, body = _unfinished_chunked(gw, "sk-not-admin")
    assert (status, body["error"]["code"]) == (401, "invalid_admin_key"), body
