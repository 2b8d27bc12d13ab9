"""The limit script's own pipelined Redis connection (gateway.tenants.script_client), against
a real redis-server: replies in order under concurrency, the script reloaded after a flush,
a lost connection failed loudly and reconnected, and the wire parser on split replies."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from gateway.tenants.script_client import ScriptClient, command, parse

ECHO = "return {tonumber(ARGV[1]), ARGV[1] .. '!'}"


def test_replies_parse_whole_and_wait_when_split():
    reply = b"*3\r\n:1\r\n$2\r\nhi\r\n*0\r\n"
    assert parse(bytearray(reply), 0) == ([1, b"hi", []], len(reply))
    for cut in range(1, len(reply)):
        assert parse(bytearray(reply[:cut]), 0) is None  # incomplete: wait for more bytes
    error, end = parse(bytearray(b"-ERR nope\r\n"), 0)
    assert isinstance(error, ResponseError) and end == 11
    assert parse(bytearray(b"$-1\r\n"), 0) == (None, 5)
    assert command(b"EVALSHA", b"x", b"0") == b"*3\r\n$7\r\nEVALSHA\r\n$1\r\nx\r\n$1\r\n0\r\n"


@pytest.mark.redis
async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(redis_server):
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_server.url)
    client = ScriptClient.for_client(redis, ECHO)
    assert client is not None
    try:
        replies = await asyncio.gather(*(client.run(str(i)) for i in range(200)))
        assert replies == [[i, f"{i}!".encode()] for i in range(200)]
        assert client.connections == 1
    finally:
        await client.aclose()
        await redis.aclose()


@pytest.mark.redis
async def test_a_flushed_script_is_loaded_again(redis_server):
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_server.url)
    client = ScriptClient.for_client(redis, ECHO)
    assert client is not None
    try:
        assert await client.run("1") == [1, b"1!"]
        await redis.script_flush()
        assert await client.run("2") == [2, b"2!"]
        assert await client.run("3") == [3, b"3!"]  # loaded again by EVAL: EVALSHA works again
    finally:
        await client.aclose()
        await redis.aclose()


@pytest.mark.redis
async def test_a_lost_connection_fails_the_call_and_the_next_one_reconnects(redis_server):
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_server.url)
    client = ScriptClient.for_client(redis, ECHO)
    assert client is not None
    try:
        assert await client.run("1") == [1, b"1!"]
        redis_server.stop()
        with pytest.raises(RedisConnectionError):
            await client.run("2")
        redis_server.start()
        assert await client.run("3") == [3, b"3!"]
        assert client.connections == 2
    finally:
        await client.aclose()
        await redis.aclose()


def test_only_plain_tcp_clients_get_the_lean_connection():
    from redis.asyncio import Redis

    assert ScriptClient.for_client(Redis.from_url("redis://127.0.0.1:1/3"), ECHO) is not None
    assert ScriptClient.for_client(Redis.from_url("rediss://127.0.0.1:1/0"), ECHO) is None
    assert ScriptClient.for_client(Redis.from_url("unix:///tmp/redis.sock"), ECHO) is None


@pytest.mark.redis
async def test_a_password_and_a_database_from_the_url_are_used(redis_server):
    from redis.asyncio import Redis

    admin = Redis.from_url(redis_server.url)
    await admin.config_set("requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/5"
    redis = Redis.from_url(url)
    client = ScriptClient.for_client(redis, "redis.call('SET', 'k', ARGV[1]); return 1")
    assert client is not None
    try:
        assert await client.run("v") == 1
        assert await redis.get("k") == b"v"  # written in database 5, after AUTH
        assert await Redis.from_url(f"redis://:s3cret@127.0.0.1:{redis_server.port}/0").get("k") is None
    finally:
        await client.aclose()
        await redis.config_set("requirepass", "")
        await redis.aclose()
        await admin.aclose()


async def test_a_connection_whose_oldest_call_never_answers_is_dropped_and_redialled():
    """A server that takes the script, then goes silent (hung, or a half-open socket): once
    the oldest call has waited `stuck_after_s`, the next call dials again."""
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        silent = connections == 1
        while data := await reader.read(65536):
            for _ in range(data.count(b"*")):  # one reply per command (no '*' inside these arguments)
                if b"SCRIPT" in data and b"LOAD" in data:
                    writer.write(b"$40\r\n" + b"0" * 40 + b"\r\n")
                    data = data.replace(b"SCRIPT", b"", 1)
                elif not silent:
                    writer.write(b":7\r\n")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ScriptClient("return 7", "127.0.0.1", port, stuck_after_s=0.2)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.run("x"), 0.1)  # the caller gives up; the call stays unanswered
        await asyncio.sleep(0.3)
        assert await asyncio.wait_for(client.run("y"), 2) == 7
        assert client.connections == 2 and connections == 2
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_a_refused_setup_is_a_connection_error_and_leaves_no_connection_open(redis_server):
    """A wrong password (WRONGPASS on AUTH): each try fails as a connection failure (so the
    limiter keeps the settlements it carried and falls back) and closes its socket, rather
    than leaving one open per retry."""
    from redis.asyncio import Redis

    admin = Redis.from_url(redis_server.url)
    await admin.config_set("requirepass", "right")
    client = ScriptClient(ECHO, "127.0.0.1", redis_server.port, password="wrong")
    try:
        for _ in range(3):
            with pytest.raises(RedisConnectionError, match="refused the setup"):
                await client.run("1")
        await asyncio.sleep(0.2)  # the server sees the closes
        authed = Redis.from_url(f"redis://:right@127.0.0.1:{redis_server.port}/0")
        clients = await authed.client_list()
        assert len(clients) == 2  # this check's own connection and `admin`'s: none left by the client
        await authed.config_set("requirepass", "")
        await authed.aclose()
    finally:
        await client.aclose()
        await admin.aclose()
