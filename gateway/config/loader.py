"""Reading the routing YAML: environment interpolation, validation, and problems that point
at a line.

Every problem is reported as `path (line N): reason`, the same for `gateway validate`, the
startup log, a rejected hot reload and the admin status endpoint, so an admin fixes a file
the same way wherever they meet the error.
"""

from __future__ import annotations

import difflib
import errno
import fnmatch
import logging
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway.config.schema import BackendConfig, GatewayConfig
from gateway.config.tasks import TASKS, load_classifier
from gateway.config.vendors import VENDORS

log = logging.getLogger("gateway.config")

# Where a value sits in the document: mapping keys and sequence indices, as pydantic's `loc`.
KeyPath = tuple[str | int, ...]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path or "<file>"
        line = f"{where} (line {self.line}): {self.message}" if self.line else f"{where}: {self.message}"
        # One problem, one line: a name holding a newline or an escape (a backend named so)
        # broke `gateway validate`'s list and the reload log, and reached the terminal raw.
        return printable(line)


def printable(text: str) -> str:
    """`text` with every character that is not printable (controls, line breaks, escapes)
    written as Python escapes it (`\x1b`, `\n`): safe for one line of a log or a terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(f"  - {p}" for p in problems))


def interpolate(value: str, env: Mapping[str, str] = os.environ) -> str:
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


def _line_map(text: str) -> tuple[dict[KeyPath, int], list[Problem]]:
    """Map each key path in the document to its 1-based line, for error messages; and list
    the keys a mapping repeats, which YAML itself accepts by keeping only the last one (so a
    second `auto:` route would silently replace the first)."""
    lines: dict[KeyPath, int] = {}
    duplicates: list[Problem] = []
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines, duplicates

    def walk(node: yaml.Node, path: KeyPath) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[str, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in first_seen:
                        duplicates.append(
                            Problem(
                                _dotted(path + (key.value,)),
                                line,
                                f"`{key.value}` is defined twice, on lines {first_seen[key.value]} and {line}: "
                                "YAML would keep only the second; remove or rename one",
                            )
                        )
                    else:
                        first_seen[key.value] = line
                child = path + (key.value,)
                lines[child] = line
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines, duplicates


def _nearest_line(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


# What a policy may expand to once its aliases are followed: a real one is a few thousand
# values, and walking it happens several times per load (lines, interpolation, validation).
MAX_VALUES = 100_000
MAX_DEPTH = 64  # nesting; a policy's own deepest is about 6


def _shape_problem(text: str) -> Problem | None:
    """Why the document's shape cannot be loaded safely, or None. YAML aliases make a file
    a graph: one that refers to itself (`a: &a [*a]`) recursed without end, nine lines of
    aliases to aliases expand to 10^8 values (minutes of a frozen event loop on a reload),
    and a few thousand `[` overflowed the parser's recursion. Each was a traceback (a 500 on
    /admin/reload); here each is a problem like any other. Walks the composed nodes once,
    without expanding them: each node's expanded size is computed once."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except RecursionError:
        return Problem("", None, f"values are nested too deeply (more than {MAX_DEPTH} levels)")
    finally:
        loader.dispose()
    if root is None:
        return None
    sizes: dict[int, int] = {}  # id(node) -> values it expands to
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = min(MAX_VALUES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in on_path:
            return Problem("", node.start_mark.line + 1, "an alias refers to a value that contains it (a loop)")
        if depth > MAX_DEPTH:
            return Problem("", node.start_mark.line + 1, f"values are nested more than {MAX_DEPTH} levels deep")
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    if sizes[id(root)] > MAX_VALUES:
        return Problem("", None, f"the file expands to more than {MAX_VALUES:,} values once its aliases are followed")
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def parse_config(text: str, source: str = "<config>") -> tuple[GatewayConfig, list[str]]:
    """Validate a config text. Returns the config and warnings; raises ConfigError."""
    try:
        shape = _shape_problem(text)
        if shape is not None:
            raise ConfigError(source, [shape])
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
    lines, duplicates = _line_map(text)
    if duplicates:
        raise ConfigError(source, duplicates)
    try:
        config = GatewayConfig.model_validate(_interpolate_tree(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # pydantic appends validator names for unions/literals; keep only real keys.
            loc: KeyPath = tuple(
                p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "literal["))
            )
            message = err["msg"].removeprefix("Value error, ")
            if "[key]" in loc:
                loc, message = _bad_key(loc, err.get("input"))
            elif err["type"] == "extra_forbidden":
                message = _unknown_field(loc)
            problems.append(Problem(_dotted(loc), _nearest_line(lines, loc), message))
        raise ConfigError(source, problems) from None
    problems = _reference_problems(config, lines)
    if problems:
        raise ConfigError(source, problems)
    return config, _warnings(config, lines, data)


def _bad_key(loc: KeyPath, name: Any) -> tuple[KeyPath, str]:
    """Where a mapping key was refused, and why. The only keys with a closed set of names are
    a route's tasks; every other refused key is a name YAML typed for itself (`off:` is
    False, `404:` an int)."""
    at = loc.index("[key]")
    if isinstance(name, str) and loc[at - 2] == "tasks":
        near = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean `{near[0]}`?)" if near else ""
        return loc[:at], f"`{name}` is not a task{hint}; the tasks are {', '.join(TASKS)}"
    return loc[: at - 1], (
        f"the name `{_yaml_scalar(name)}` is not a string (YAML reads unquoted "
        "yes/no/on/off/true/false, null and numbers as values): put it in quotes"
    )


def _unknown_field(loc: KeyPath) -> str:
    """A typo'd field name, with the field it was probably meant to be."""
    fields = _fields_at(loc[:-1])
    name = str(loc[-1])
    near = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    if near:
        return f"unknown field `{name}`: did you mean `{near[0]}`?"
    return f"unknown field `{name}`; the fields here are {', '.join(fields)}" if fields else f"unknown field `{name}`"


def _fields_at(loc: KeyPath) -> list[str]:
    """The field names the schema allows at `loc` (a path into GatewayConfig), or [] if unknown."""
    node: Any = GatewayConfig
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return []
            node = field.annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list:
            node = typing.get_args(node)[0]
        else:
            return []
    node = _unwrap(node)
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X: optional sections have the fields of the section."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


def _reference_problems(config: GatewayConfig, lines: dict[KeyPath, int]) -> list[Problem]:
    served = {m for b in config.backends.values() for m in b.models}
    problems: list[Problem] = []
    path: KeyPath
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
        listed: list[tuple[KeyPath, str]] = [(("routes", name, "models", i), m) for i, m in enumerate(route.models)]
        listed += [(("routes", name, "tasks", t, i), m) for t, ms in route.tasks.items() for i, m in enumerate(ms)]
        for path, model_id in listed:
            if model_id not in served:
                problems.append(
                    Problem(
                        _dotted(path),
                        _nearest_line(lines, path),
                        f"model `{model_id}` is not served by any backend{_did_you_mean(model_id, served)}",
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
    problems += _kind_problems(config, lines)
    problems += _alias_problems(config, served, lines)
    kind = config.gateway.classifier.kind
    if kind != "heuristic":
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


def _model_kinds(config: GatewayConfig) -> dict[str, dict[str, str]]:
    """model -> {backend: kind} over every backend that lists the model."""
    kinds: dict[str, dict[str, str]] = {}
    for backend_name, backend in config.backends.items():
        for model_id, offer in backend.models.items():
            kinds.setdefault(model_id, {})[backend_name] = offer.kind
    return kinds


def _kind_problems(config: GatewayConfig, lines: dict[KeyPath, int]) -> list[Problem]:
    """A model is one kind wherever it is served, and a route lists models of one kind: an
    embeddings request must never be sent to a chat model, nor a chat request to an
    embedding model, and a route's fallback tiers must all answer the same endpoint."""
    problems: list[Problem] = []
    kinds = _model_kinds(config)
    path: KeyPath
    for model_id, by_backend in kinds.items():
        if len(set(by_backend.values())) > 1:
            chat = [b for b, k in by_backend.items() if k == "chat"]
            embedding = [b for b, k in by_backend.items() if k == "embedding"]
            path = ("backends", embedding[0], "models", model_id, "kind")
            problems.append(
                Problem(
                    _dotted(path),
                    _nearest_line(lines, path),
                    f"`{model_id}` is `kind: embedding` on {', '.join(embedding)} but a chat model on "
                    f"{', '.join(chat)}: a model is one kind wherever it is served",
                )
            )
    for name, route in config.routes.items():
        listed = list(route.models) + [m for ms in route.tasks.values() for m in ms]
        by_kind: dict[str, list[str]] = {}
        for model_id in dict.fromkeys(listed):
            for kind in set(kinds.get(model_id, {}).values()):
                by_kind.setdefault(kind, []).append(model_id)
        if len(by_kind) > 1:
            path = ("routes", name)
            problems.append(
                Problem(
                    _dotted(path),
                    _nearest_line(lines, path),
                    f"route `{name}` mixes chat models ({', '.join(by_kind['chat'])}) and embedding models "
                    f"({', '.join(by_kind['embedding'])}): a route serves one kind, so split it into two routes",
                )
            )
    return problems


def _alias_problems(config: GatewayConfig, served: set[str], lines: dict[KeyPath, int]) -> list[Problem]:
    problems: list[Problem] = []
    known = set(config.routes) | served | set(config.models)
    for pattern, target in config.aliases.items():
        if target not in known:
            path = ("aliases", pattern)
            problems.append(
                Problem(
                    _dotted(path),
                    _nearest_line(lines, path),
                    f"alias `{pattern}` points at `{target}`, which is neither a route nor a model"
                    f"{_did_you_mean(target, known)}",
                )
            )
    return problems


def _weight_key_known(key: str, route_models: set[str], config: GatewayConfig) -> bool:
    if key in route_models or key in config.backends:
        return True
    backend, _, model = key.partition("/")
    return backend in config.backends and model in config.backends[backend].models


def _did_you_mean(name: str, known: set[str]) -> str:
    near = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean `{near[0]}`?)" if near else ""


def _warnings(config: GatewayConfig, lines: dict[KeyPath, int], raw: Any = None) -> list[str]:
    out = []
    # A warning, not a rejection: keeping a model's metadata while its backend is commented
    # out (as policies/default.yaml shows) is legitimate, and refusing it would make a hot
    # reload that removes a backend fail. But a typo here silently drops what the entry
    # declares (undeclared capabilities mean capable), so it must not pass unnoticed.
    served = {m for b in config.backends.values() for m in b.models}
    for model_id in config.models:
        if model_id not in served:
            path = ("models", model_id)
            reason = f"no backend serves `{model_id}`, so this entry has no effect{_did_you_mean(model_id, served)}"
            out.append(str(Problem(_dotted(path), lines.get(path), reason)))
    for name, backend in config.backends.items():
        vendor = VENDORS[backend.type]
        if backend.enabled and vendor.key_required and not backend.api_key:
            # The variable the file reads the key from, else the vendor's usual one: the
            # hint must name what would fix it (`api_key: ${MY_KEY}` unset wants MY_KEY).
            named = _referenced_variables(_raw_api_key(raw, name))
            if named:
                hint = f" (set {named[0]})"
            elif vendor.key_env:  # nothing reads that variable unless the file names it
                hint = f" (set `api_key:`, e.g. `api_key: ${{{vendor.key_env}}}`)"
            else:
                hint = " (set `api_key:`)"
            out.append(f"backend `{name}` ({backend.type}) has no API key{hint}: disabled")
        out.extend(_unreachable_embeddings(name, backend, lines))
    out.extend(_mixed_embedding_models(config, lines))
    out.extend(_dead_aliases(config, served, lines))
    return out


def _mixed_embedding_models(config: GatewayConfig, lines: dict[KeyPath, int]) -> list[str]:
    """A route listing two embedding models: each answers in a vector space of its own (a
    length of its own too, most often), so the fallback or the strategy's choice between them
    puts vectors of both into one index, and its searches quietly go wrong. A warning, not a
    refusal (a route that re-embeds everything after a switch is the operator's to write);
    one model served by several backends is the way to have fallback."""
    embedding = {m for b in config.backends.values() for m, offer in b.models.items() if offer.kind == "embedding"}
    out = []
    for name, route in config.routes.items():
        listed = list(route.models) + [m for ms in route.tasks.values() for m in ms]
        models = [m for m in dict.fromkeys(listed) if m in embedding]
        if len(models) > 1:
            path = ("routes", name)
            reason = (
                f"route `{name}` lists the embedding models {', '.join(models)}: each answers in its own vector "
                "space, so a fallback or the strategy's choice between them would mix their vectors in one index; "
                "list one model per route (served by several backends, it still falls back)"
            )
            out.append(str(Problem(_dotted(path), _nearest_line(lines, path), reason)))
    return out


_GLOB = re.compile(r"[*?\[]")


def _dead_aliases(config: GatewayConfig, served: set[str], lines: dict[KeyPath, int]) -> list[str]:
    """Aliases no name can ever reach. The first pattern that matches wins, in the order the
    file lists them, so `claude-haiku-*` listed after `claude-*` never matches: `gateway
    validate` called such a file valid without a word, and the names it was written for
    went where the broader pattern sends them. Neither can an alias spelled as a route or
    model id (such a name is never aliased). Warnings, not problems: the file serves, only
    not as its author meant. Only coverage that is certain is named (see `_covers`)."""
    known = set(config.routes) | served | set(config.models)
    out: list[str] = []
    earlier: list[str] = []
    for pattern in config.aliases:
        path = ("aliases", pattern)
        where = _nearest_line(lines, path)
        if pattern in known:
            what = "a route" if pattern in config.routes else "a model id"
            reason = (
                f"alias `{pattern}` is never used: `{pattern}` is {what}, and a name the config knows is never aliased"
            )
            out.append(str(Problem(_dotted(path), where, reason)))
        else:
            broader = next((e for e in earlier if _covers(e, pattern)), None)
            if broader is not None:
                at = _nearest_line(lines, ("aliases", broader))
                reason = (
                    f"alias `{pattern}` is never used: every name it matches is matched first by `{broader}`"
                    f"{f' (line {at})' if at else ''}; list the narrower pattern first"
                )
                out.append(str(Problem(_dotted(path), where, reason)))
        earlier.append(pattern)
    return out


def _covers(broad: str, narrow: str) -> bool:
    """Whether every name glob `narrow` matches is matched by glob `broad` too, when that is
    certain from their shapes: `broad` is `*`, or a literal prefix then `*` that `narrow`'s
    own literal prefix starts with (`claude-*` before `claude-haiku-*`), or `*` then a literal
    suffix that `narrow`'s literal suffix ends with (`*-mini` before `gpt-*-mini`); or
    `narrow` is a plain name `broad` matches. Other pairs are not judged (False)."""
    if not _GLOB.search(narrow):
        return fnmatch.fnmatchcase(narrow, broad)
    stem = broad.strip("*")
    if not stem:
        return True  # `*`, `**`: every name
    if _GLOB.search(stem):
        return False
    if broad == stem + "*":
        return _literal_prefix(narrow).startswith(stem)
    if broad == "*" + stem and "[" not in narrow:
        return _literal_suffix(narrow).endswith(stem)
    return False


def _literal_prefix(pattern: str) -> str:
    """What every name `pattern` matches starts with: the text before its first glob character."""
    found = _GLOB.search(pattern)
    return pattern[: found.start()] if found else pattern


def _literal_suffix(pattern: str) -> str:
    """What every name `pattern` (without `[...]`) matches ends with: the text after its last
    `*` or `?`."""
    return pattern[max(pattern.rfind("*"), pattern.rfind("?")) + 1 :]


def _unreachable_embeddings(name: str, backend: BackendConfig, lines: dict[KeyPath, int]) -> list[str]:
    """An embedding offer on a backend that does not serve /v1/embeddings natively: embeddings
    have no translation through chat, so no request can reach it. A warning, as an unserved
    `models:` entry is (a reload that changes a backend's type must not fail on it), but one
    that says so: `gateway validate` called it valid, and every call to it was a 400."""
    served = backend.served_apis
    if "embeddings" in served:
        return []
    out = []
    for model_id, offer in backend.models.items():
        if offer.kind == "embedding":
            path = ("backends", name, "models", model_id, "kind")
            apis = ", ".join(sorted(served)) or "none"
            reason = (
                f"`{model_id}` is `kind: embedding`, but backend `{name}` ({backend.type}) does not serve "
                f"POST /v1/embeddings (its `apis`: {apis}): no request can reach it here; add `embeddings` "
                "to its `apis:` if it does serve them"
            )
            out.append(str(Problem(_dotted(path), lines.get(path), reason)))
    return out


def _raw_api_key(raw: Any, backend: str) -> Any:
    """`backends.<backend>.api_key` as the file spells it, before `${VAR}` interpolation."""
    backends = raw.get("backends") if isinstance(raw, dict) else None
    entry = backends.get(backend) if isinstance(backends, dict) else None
    return entry.get("api_key") if isinstance(entry, dict) else None


def _referenced_variables(value: Any) -> list[str]:
    return [m.group(1) for m in _VAR.finditer(value)] if isinstance(value, str) else []


# A policy is a few KB (a thousand models: under 100 KB). A file past this is not one: a log
# named by mistake was read whole and then parsed, /dev/zero read until a MemoryError.
MAX_POLICY_BYTES = 4 * 2**20


def read_policy(path: Path) -> bytes:
    """The policy file's bytes, as every reader of one reads them; an OSError (`strerror`
    saying why) for a file larger than any policy, read no further than that."""
    with path.open("rb") as f:
        raw = f.read(MAX_POLICY_BYTES + 1)
    if len(raw) > MAX_POLICY_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy")
    return raw


def load_config(path: str | Path) -> tuple[GatewayConfig, list[str]]:
    path = Path(path)
    try:
        # UTF-8 whatever the locale, as the reloader reads it: a file the CLI accepts is one
        # the running gateway applies, and one that is not UTF-8 is a problem, not a traceback.
        text = read_policy(path).decode("utf-8")
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror}"
        if not path.is_absolute():  # e.g. GATEWAY_CONFIG's default, run from outside the checkout
            reason += f" (looked for {path.absolute()}; a relative path is read from the current directory)"
        raise ConfigError(str(path), [Problem("", None, reason)]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Problem("", None, f"cannot read the file: {not_utf8(exc)}")]) from None
    return parse_config(text, str(path))


def not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a policy stops being UTF-8, as every reader of one reports it."""
    return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
