"""Ids made on every call (gateway/ids.py): request ids never repeat; secret tokens (stored
Responses' ids) are random bytes read in batches, never handed out twice, not even by a
forked child that inherited its parent's batch."""

from __future__ import annotations

import os

from gateway.ids import RequestIds, SecretTokens


def test_request_ids_never_repeat_within_or_across_instances():
    a, b = RequestIds(), RequestIds()
    ids = [a.next() for _ in range(1000)] + [b.next() for _ in range(1000)]
    assert len(set(ids)) == 2000 and all(i.startswith("req-") for i in ids)


def test_secret_tokens_are_hex_of_their_size_and_never_repeat_across_batches():
    tokens = SecretTokens(nbytes=24, batch=4)  # a batch of 4: 1000 tokens read 250 batches
    made = [tokens.next() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(t) == 48 and int(t, 16) >= 0 for t in made)


def test_a_forked_child_does_not_hand_out_its_parents_tokens():
    tokens = SecretTokens(nbytes=24, batch=64)
    tokens.next()  # the batch is read: 63 tokens left in it, which the child inherits
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, to the parent, and out (whatever happens)
        try:
            os.close(read)
            os.write(write, "".join(tokens.next() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = "".join(tokens.next() for _ in range(5))
    assert len(child) == len(parent) == 5 * 48
    assert child.decode() != parent  # not the same inherited bytes
