"""`gateway keys ...` and `gateway teams ...`: manage virtual keys and teams.

They work on the store a gateway reads (Redis when GATEWAY_REDIS_URL or --redis-url is
set, else keys.sqlite3 in GATEWAY_DATA_DIR or --data-dir), whether or not a gateway runs;
running gateways pick changes up within GATEWAY_KEYS_REFRESH_S. `create` and `rotate`
print the plain key once: it is not stored and cannot be shown again.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.cli.store import KEYS_FILE, add_store_flags, describe_store, settings_from

if TYPE_CHECKING:
    from gateway.settings import Settings
    from gateway.tenants.admin import TenantAdmin

# What a command prints: one record or a list of them, as the admin API returns them.
Shown = dict[str, Any] | list[dict[str, Any]]
Action = Callable[["TenantAdmin", argparse.Namespace], Shown]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="virtual keys: create, list, update, revoke, rotate, audit")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    c = ks.add_parser("create", help="create a key and print it once")
    c.add_argument("--name", required=True)
    _limit_flags(c)
    _key_flags(c)
    c.set_defaults(func=run_key_create)
    u = ks.add_parser("update", help="change a key's limits, models, team or expiry (0 removes a limit)")
    u.add_argument("name")
    _limit_flags(u)
    _key_flags(u, update=True)
    u.set_defaults(func=run_key_update)
    ls = ks.add_parser("list", help="every key, its limits and status (never the key itself)")
    ls.set_defaults(func=run_key_list)
    r = ks.add_parser("revoke", help="revoke a key (every replica refuses it within seconds)")
    r.add_argument("name")
    r.set_defaults(func=run_key_revoke)
    ro = ks.add_parser(
        "rotate", help="issue a new key; the one it replaces stays valid for --overlap, any older one ends now"
    )
    ro.add_argument("name")
    ro.add_argument(
        "--overlap", default="0", help="how long the replaced key keeps working: 0 (default), 30m, 24h, 7d; at most 30d"
    )
    ro.set_defaults(func=run_key_rotate)
    a = ks.add_parser("audit", help="the admin actions on keys and teams, newest last")
    a.add_argument(
        "--limit", type=_at_least_one, default=100, help="how many of the newest entries, 1 or more (default: 100)"
    )
    a.set_defaults(func=run_audit)
    for p in (c, u, ls, r, ro, a):
        add_store_flags(p, KEYS_FILE)
        p.add_argument("--json", action="store_true", help="print JSON")

    teams = sub.add_parser("teams", help="teams: limits and budgets shared by their keys")
    ts = teams.add_subparsers(dest="teams_command", required=True)
    tc = ts.add_parser("create", help="create a team")
    tc.add_argument("name")
    _limit_flags(tc)
    tc.set_defaults(func=run_team_create)
    tu = ts.add_parser("update", help="change a team's limits (0 removes a limit)")
    tu.add_argument("name")
    _limit_flags(tu)
    tu.set_defaults(func=run_team_update)
    tl = ts.add_parser("list", help="every team and its limits")
    tl.set_defaults(func=run_team_list)
    for p in (tc, tu, tl):
        add_store_flags(p, KEYS_FILE)
        p.add_argument("--json", action="store_true", help="print JSON")


def _limit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpm", type=_whole, help="requests per minute")
    p.add_argument("--tpm", type=_whole, help="tokens per minute (prompt + completion)")
    p.add_argument("--max-concurrent", type=_whole, help="requests in flight at once")
    p.add_argument("--budget-usd", type=_dollars, help="spend limit per budget period, USD")
    p.add_argument("--budget-period", type=_period, metavar="{day,month}", help="UTC day or month (default month)")


def _key_flags(p: argparse.ArgumentParser, update: bool = False) -> None:
    p.add_argument("--models", help="comma-separated globs of routes and model ids, e.g. 'qwen/*,auto'")
    p.add_argument("--team", help="team whose limits and budget also apply" + ("; '' removes it" if update else ""))
    p.add_argument(
        "--expires",
        help="UTC date or datetime after which the key is refused, e.g. 2027-01-01"
        + ("; 0 removes it" if update else ""),
    )


# Flag types whose errors quote the value bounded (`echoed`): argparse's own `type=int` and
# `choices` repeat it whole, so a 100,000-character typo came back in full.
def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _bad_flag("a whole number", text) from None


def _dollars(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _bad_flag("an amount in USD like 12.50", text) from None


def _period(text: str) -> str:
    if text not in ("day", "month"):
        raise _bad_flag("day or month", text)
    return text


def _bad_flag(expected: str, text: str) -> argparse.ArgumentTypeError:
    from gateway.protocol.errors import echoed

    return argparse.ArgumentTypeError(f"expected {expected}, got {echoed(text)!r}")


def _at_least_one(text: str) -> int:
    """`--limit`'s value: 0 or less was shown as 1 entry, a count the admin never asked for."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in ("rpm", "tpm", "max_concurrent", "budget_usd", "budget_period")}


def _run(args: argparse.Namespace, action: Action) -> int:
    from gateway.tenants.admin import TenantAdmin
    from gateway.tenants.keys import TenantError
    from gateway.tenants.store import open_tenant_store

    settings = settings_from(args)
    store = open_tenant_store(settings)
    try:
        _announce(args, settings, empty=not store.all_keys() and not store.all_teams())
        # The static keys this environment names (GATEWAY_API_KEYS, as the server's): the
        # server refuses a virtual key that shares a name with one anyway (Authenticator).
        result = action(TenantAdmin(store, static_names=settings.client_keys().values()), args)
    except TenantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    _print(result, args.json)
    return 0


_READS = frozenset({"list", "audit"})


def _announce(args: argparse.Namespace, settings: Settings, *, empty: bool) -> None:
    """One line on stderr: which key store the command used, and whether it held nothing.
    Without it, a CLI run where GATEWAY_REDIS_URL was not set (a bastion, a laptop) made its
    key in a keys.sqlite3 no gateway reads and printed it as if made: every call with it was
    a 401. The usage commands say the same of their store (gateway.cli.store.announce_store)."""
    sub = getattr(args, f"{args.command}_command")
    verb = "reads" if sub in _READS else "writes to"
    line = f"gateway {args.command} {sub} {verb} {describe_store(settings, KEYS_FILE)}"
    if empty:
        line += " (empty: no key or team was made there before)"
    print(line, file=sys.stderr)


def _print(result: Shown, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    rows = result if isinstance(result, list) else [result]
    if not rows:
        print("(none)")
        return
    columns = [c for c in rows[0] if c not in ("created_at",)]
    cells = [[_cell(_shown(row, c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _shown(row: Any, column: str) -> Any:
    """A row's value as the table shows it: a budget in dollars as every message writes them
    (`$0.00005`, not `5e-05`); a budget period without a budget limits nothing, so it reads
    `-` like every other unset limit (`--json` keeps the stored record)."""
    if column == "budget_period" and row.get("budget_usd") is None:
        return None
    if column == "budget_usd" and row.get(column) is not None:
        from gateway.money import usd

        return usd(row[column])
    return row.get(column)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":")) if value else "-"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "*"
    return str(value)


def run_key_create(args: argparse.Namespace) -> int:
    from gateway.tenants.admin import new_limits
    from gateway.tenants.keys import parse_when

    def act(admin: TenantAdmin, args: argparse.Namespace) -> Shown:
        issued = admin.create_key(
            args.name,
            actor=_actor(),
            limits=new_limits(_limits(args)),
            models=args.models,
            team=args.team,
            expires_at=parse_when(args.expires),
        )
        if not args.json:
            print(f"key: {issued.plain}\n(shown once: it is not stored and cannot be shown again)\n")
            return issued.key.public()
        return issued.public()

    return _run(args, act)


def run_key_update(args: argparse.Namespace) -> int:
    from gateway.tenants.keys import parse_when

    def act(admin: TenantAdmin, args: argparse.Namespace) -> Shown:
        expires = None if args.expires is None else (parse_when(args.expires) if args.expires != "0" else 0)
        key = admin.update_key(
            args.name, actor=_actor(), models=args.models, team=args.team, expires_at=expires, **_limits(args)
        )
        return key.public()

    return _run(args, act)


def run_key_list(args: argparse.Namespace) -> int:
    return _run(args, lambda admin, args: [k.public() for k in admin.store.all_keys()])


def run_key_revoke(args: argparse.Namespace) -> int:
    return _run(args, lambda admin, args: admin.revoke_key(args.name, actor=_actor()).public())


def run_key_rotate(args: argparse.Namespace) -> int:
    from gateway.tenants.keys import parse_overlap

    def act(admin: TenantAdmin, args: argparse.Namespace) -> Shown:
        issued = admin.rotate_key(args.name, actor=_actor(), overlap_s=parse_overlap(args.overlap))
        if not args.json:
            print(
                f"new key: {issued.plain}\n(shown once; the key it replaces works for {args.overlap} more,"
                " any older one no longer)\n"
            )
            return issued.key.public()
        return issued.public()

    return _run(args, act)


def run_audit(args: argparse.Namespace) -> int:
    return _run(args, lambda admin, args: [e.public() for e in admin.store.audit(args.limit)])


def run_team_create(args: argparse.Namespace) -> int:
    from gateway.tenants.admin import new_limits

    return _run(
        args,
        lambda admin, args: admin.create_team(args.name, actor=_actor(), limits=new_limits(_limits(args))).public(),
    )


def run_team_update(args: argparse.Namespace) -> int:
    return _run(args, lambda admin, args: admin.update_team(args.name, actor=_actor(), **_limits(args)).public())


def run_team_list(args: argparse.Namespace) -> int:
    return _run(args, lambda admin, args: [t.public() for t in admin.store.all_teams()])
