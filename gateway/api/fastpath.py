"""An ASGI front door that sends the proxy route straight to its handler.

FastAPI wraps every request in several middleware layers (error, exception, telemetry,
body limit, exit stack, router). The proxy routes need none of them, and on the proxy path
they cost a measurable share of each call (see `make bench`), so POST /v1/chat/completions
and the other ingress APIs (Messages, Responses, embeddings, completions) go to their raw
ASGI handlers; every other path, and the lifespan, goes through FastAPI as usual. Which
paths are fast is said by the route table (gateway.api.routes).

Operator middleware (CORS, tracing) is not added to FastAPI, where the fast routes would skip
it, but wrapped around this front door (`with_middleware`): it sees every request, fast or not,
and the lifespan. Without any, nothing is wrapped and the hot path pays nothing.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.protocol.errors import GatewayError

log = logging.getLogger("gateway.api")

AsgiHandler = Callable[[Scope, Receive, Send], Awaitable[None]]
# An operator's middleware: given the app it wraps, the ASGI app to serve instead; a middleware
# class is one (`functools.partial(CORSMiddleware, allow_origins=[...])`).
Middleware = Callable[[ASGIApp], ASGIApp]


class FastPathApp:
    def __init__(self, app: FastAPI, routes: Mapping[str, AsgiHandler]) -> None:
        self.app = app  # the FastAPI app: state, lifespan, every other route
        self._routes = routes  # path -> ASGI handler, POST only; it sends its own response

    @property
    def routes(self) -> Mapping[str, AsgiHandler]:
        """Path -> handler of the POST routes served here, ahead of FastAPI."""
        return self._routes

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                try:
                    await handler(scope, receive, send)
                except Exception:
                    # A bug, not a client's or upstream's fault (those are answered by the
                    # handler). Answer 500 if nothing was sent yet; the server ends it otherwise.
                    log.exception("unhandled error on %s", scope["path"])
                    response = GatewayError(500, "Internal gateway error.", code="internal_error").to_response()
                    try:
                        await response(scope, receive, send)
                    except Exception:
                        pass
                return
        await self.app(scope, receive, send)


class _Wrapped(FastPathApp):
    """The front door behind the operator's middleware, outermost first."""

    def __init__(self, front: FastPathApp, middleware: Sequence[Middleware]) -> None:
        super().__init__(front.app, front.routes)
        stack: ASGIApp = front
        for wrap in reversed(middleware):
            stack = wrap(stack)
        self._stack = stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._stack(scope, receive, send)


def with_middleware(front: FastPathApp, middleware: Sequence[Middleware]) -> FastPathApp:
    """`front` with the operator's middleware around it (the first listed is outermost);
    `front` itself when there is none."""
    return _Wrapped(front, middleware) if middleware else front


def _entries(paths: str) -> list[tuple[str, str, str]]:
    """(entry, module, attribute) of each `module:attribute` in `paths`."""
    out = []
    for path in filter(None, (p.strip() for p in paths.split(","))):
        module_name, _, attribute = path.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"GATEWAY_MIDDLEWARE entry {path!r} is not `module:attribute`")
        out.append((path, module_name, attribute))
    return out


def check_middleware(paths: str) -> None:
    """A ValueError naming the first entry of `GATEWAY_MIDDLEWARE` whose module cannot be
    found, or whose source plainly defines no such attribute, without running it (its parent
    packages are imported; the source is read): `gateway serve` asks before starting its
    workers, which import the modules themselves."""
    for path, module_name, attribute in _entries(paths):
        try:
            found = importlib.util.find_spec(module_name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            raise ValueError(
                f"GATEWAY_MIDDLEWARE entry {path!r}: no module {module_name!r} to import; the gateway imports "
                "it as Python does: install it, or put the directory that holds it on PYTHONPATH"
            )
        if _binds(found.origin, attribute) is False:
            # A typo in the name: with --workers N every worker died at import and was
            # restarted, for ever (serve neither served nor exited).
            raise ValueError(f"GATEWAY_MIDDLEWARE entry {path!r}: module {module_name!r} defines no {attribute!r}")


def _binds(origin: str | None, name: str) -> bool | None:
    """Whether the Python source at `origin` binds `name` at its top level (read, not run:
    definitions, assignments and imports, inside top-level `if`/`try`/`with` blocks too);
    None when that cannot be told (no source, a star import, a module-level __getattr__)."""
    if not origin or not origin.endswith(".py"):
        return None
    try:
        statements = list(ast.parse(Path(origin).read_bytes()).body)
    except (OSError, SyntaxError, ValueError):
        return None
    while statements:
        node = statements.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
            if node.name == "__getattr__":
                return None
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            stored = (
                n for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            )
            if any(n.id == name for n in stored):
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                if (alias.asname or alias.name).split(".")[0] == name:
                    return True
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                statements.extend(getattr(node, block, []))
            for handler in getattr(node, "handlers", []):
                statements.extend(handler.body)
    return False


def imported_middleware(paths: str) -> list[Middleware]:
    """The middleware named by `GATEWAY_MIDDLEWARE`: comma-separated `module:attribute` import
    paths, each a callable taking the app it wraps (a middleware class, or a factory)."""
    out: list[Middleware] = []
    for path, module_name, attribute in _entries(paths):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"GATEWAY_MIDDLEWARE entry {path!r}: importing {module_name!r} failed: {exc}") from exc
        found = getattr(module, attribute, None)
        if found is None:
            raise ValueError(f"GATEWAY_MIDDLEWARE entry {path!r}: {module_name!r} has no attribute {attribute!r}")
        if not callable(found):
            raise ValueError(f"GATEWAY_MIDDLEWARE entry {path!r} is not callable")
        out.append(found)
    return out
