"""Reading the routing YAML: environment interpolation, validation, and problems that point
at a line.

Every problem is reported as `path (line N): reason`, the same for `gateway validate`, the
startup log, a rejected hot reload and the admin status endpoint, so an admin fixes a file
the same way wherever they meet the error.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.backends.registry import VENDORS
from gateway.config.schema import GatewayConfig

log = logging.getLogger("gateway.config")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path or "<file>"
        return f"{where} (line {self.line}): {self.message}" if self.line else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


def interpolate(value: str, env: dict[str, str] | os._Environ = os.environ) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset variable without default becomes ''."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = env.get(name)
        if found:
            return found
        return default if default is not None else ""

    return _VAR.sub(sub, value)


def _interpolate_tree(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node) if "${" in node else node
    if isinstance(node, dict):
        return {k: _interpolate_tree(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v) for v in node]
    return node


def _line_map(text: str) -> dict[tuple, int]:
    """Map each key path in the document to its 1-based line, for error messages."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def _nearest_line(lines: dict[tuple, int], path: tuple) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_config(text: str, source: str = "<config>") -> tuple[GatewayConfig, list[str]]:
    """Validate a config text. Returns the config and warnings; raises ConfigError."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError(source, [Problem("", line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if data is None:
        # An empty file is far more often a truncated save than a policy: swapping it in
        # would stop every route, so it is rejected like any other broken edit.
        raise ConfigError(
            source, [Problem("", 1, "the file is empty: a policy needs at least one backend with models")]
        )
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", 1, "the file must be a mapping with backends, models and routes")])
    lines = _line_map(text)
    try:
        config = GatewayConfig.model_validate(_interpolate_tree(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # pydantic appends validator names for unions/literals; keep only real keys.
            loc = tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "literal[")))
            message = err["msg"].removeprefix("Value error, ")
            if "[key]" in loc:
                # A name YAML typed for itself: `off:` is False, `404:` an int. Say so.
                loc = loc[: loc.index("[key]") - 1]
                message = (
                    f"the name `{_yaml_scalar(err.get('input'))}` is not a string (YAML reads unquoted "
                    "yes/no/on/off/true/false, null and numbers as values): put it in quotes"
                )
            problems.append(Problem(_dotted(loc), _nearest_line(lines, loc), message))
        raise ConfigError(source, problems) from None
    problems = _reference_problems(config, lines)
    if problems:
        raise ConfigError(source, problems)
    return config, _warnings(config)


def _reference_problems(config: GatewayConfig, lines: dict[tuple, int]) -> list[Problem]:
    served = {m for b in config.backends.values() for m in b.models}
    problems = []
    if not served:
        path = ("backends",)
        problems.append(
            Problem(
                "backends", _nearest_line(lines, path), "no backend declares any model: the gateway would serve nothing"
            )
        )
    for name, route in config.routes.items():
        if "/" in name:
            problems.append(
                Problem(f"routes.{name}", lines.get(("routes", name)), "route names may not contain `/` (model ids do)")
            )
        listed = [(("routes", name, "models", i), m) for i, m in enumerate(route.models)]
        listed += [(("routes", name, "tasks", t, i), m) for t, ms in route.tasks.items() for i, m in enumerate(ms)]
        for path, model_id in listed:
            if model_id not in served:
                problems.append(
                    Problem(
                        _dotted(path), _nearest_line(lines, path), f"model `{model_id}` is not served by any backend"
                    )
                )
        listed_models = set(route.models) | {m for ms in route.tasks.values() for m in ms}
        for key in route.weights:
            if not _weight_key_known(key, listed_models, config):
                path = ("routes", name, "weights", key)
                problems.append(
                    Problem(
                        _dotted(path),
                        _nearest_line(lines, path),
                        f"`{key}` is none of this route's models, a backend, or backend/model",
                    )
                )
    kind = config.gateway.classifier.kind
    if kind != "heuristic":
        from gateway.routing.classify import load_classifier

        try:
            load_classifier(kind)
        except ValueError as exc:
            path = ("gateway", "classifier", "kind")
            problems.append(Problem(_dotted(path), _nearest_line(lines, path), str(exc)))
    for name in config.rate_limits.routes:
        if name not in config.routes and name not in served:
            path = ("rate_limits", "routes", name)
            problems.append(
                Problem(_dotted(path), _nearest_line(lines, path), f"`{name}` is neither a route nor a served model")
            )
    return problems


def _weight_key_known(key: str, route_models: set[str], config: GatewayConfig) -> bool:
    if key in route_models or key in config.backends:
        return True
    backend, _, model = key.partition("/")
    return backend in config.backends and model in config.backends[backend].models


def _warnings(config: GatewayConfig) -> list[str]:
    out = []
    for name, backend in config.backends.items():
        vendor = VENDORS[backend.type]
        if backend.enabled and vendor.key_required and not backend.api_key:
            hint = f" (set {vendor.key_env})" if vendor.key_env else ""
            out.append(f"backend `{name}` ({backend.type}) has no API key{hint}: disabled")
    return out


def load_config(path: str | Path) -> tuple[GatewayConfig, list[str]]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [Problem("", None, f"cannot read the file: {exc.strerror}")]) from None
    return parse_config(text, str(path))
