"""`gateway explain --config FILE request.json`: how a request would be routed, offline.

Uses the config's priors (no observed latency, every circuit closed) and calls no backend;
the running gateway's `POST /v1/route/explain` answers the same with live observations. The
body is read by the endpoint's own parser, as the running gateway reads it; offline there is
no conversation store, so a Responses `previous_response_id` is explained on the new input.
"""

from __future__ import annotations

import argparse
import sys

from gateway.cli.policy import add_config_flag, load_snapshot, print_warnings
from gateway.config.loader import printable


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("explain", help="show how a request would be routed, without calling a backend")
    p.add_argument("request", help="JSON body of a request to the endpoint ('-' for stdin)")
    add_config_flag(p)
    p.add_argument(
        "--endpoint",
        default="chat",
        choices=("chat", "messages", "responses", "completions", "embeddings"),
        help="the API the request is for (its body's shape): default chat",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME: VALUE",
        help="request header, e.g. 'X-Gateway-Task: code'",
    )
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from gateway.api.explain import explained_plan, ingress_for
    from gateway.protocol.errors import GatewayError
    from gateway.routing.explain import explanation, render_text

    headers = {}
    for item in args.header:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            # Ignored, it would explain another request than the one the admin meant.
            print(f"--header {item!r}: expected 'NAME: VALUE', e.g. 'X-Gateway-Task: code'", file=sys.stderr)
            return 1
        headers[name.strip().lower()] = value.strip()
    snapshot = load_snapshot(args.config)
    if snapshot is None:
        return 1
    try:
        body = sys.stdin.buffer.read() if args.request == "-" else open(args.request, "rb").read()
    except OSError as exc:
        print(f"cannot read {args.request}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        ingress = ingress_for(args.endpoint)
        decision = explained_plan(ingress, ingress.parse(body, headers), headers, snapshot)
    except GatewayError as exc:
        print(_shown(f"error {exc.status} {exc.code or exc.type}: {exc.message}"), file=sys.stderr)
        return 1
    doc = explanation(decision)
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() if args.json else _shown(render_text(doc)))
    print_warnings(snapshot.warnings)
    return 0 if decision.error is None else 2


def _shown(text: str) -> str:
    """`text` for the terminal: the request explained is often a client's, as captured, and
    the errors quote its model name and headers; an escape sequence in them was written as
    is (clearing, recolouring the admin's terminal). Control characters are shown escaped."""
    return "\n".join(printable(line) for line in text.split("\n"))
