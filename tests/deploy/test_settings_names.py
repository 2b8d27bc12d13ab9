"""The GATEWAY_* variables operators read about and set are the ones the gateway reads.

pydantic-settings ignores a variable it has no field for (`extra="ignore"`): a misspelt name
in a manifest, the README or a docstring an operator follows is silently no setting at all.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest
import yaml

from gateway.settings import Settings
from tests.deploy.artifacts import DEPLOY, REPO

SETTINGS = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
# Named in the docs but read by something else: docker compose's own interpolation (the
# published address and port), and the variable the Codex CLI section has Codex read.
NOT_SETTINGS = {"GATEWAY_PUBLISH_ADDRESS", "GATEWAY_PUBLISH_PORT", "GATEWAY_API_KEY"}
# A name, or a family of names (`GATEWAY_RESPONSES_*`); not the tail of an identifier (`_GATEWAY_CAUSED`).
_NAME = re.compile(r"(?<![A-Za-z0-9_])(GATEWAY_[A-Z0-9_]*[A-Z0-9])(_\*)?")
DOCUMENTS = ["README.md", "policies/README.md", "ARCHITECTURE.md", "docker-compose.yml", "Dockerfile"]


def _named_in(text: str) -> set[str]:
    return {name + ("_" if family else "") for name, family in _NAME.findall(text)}


def _known(name: str) -> bool:
    if name.endswith("_"):  # a family: some setting must start with it
        return any(setting.startswith(name) for setting in SETTINGS)
    return name in SETTINGS or name in NOT_SETTINGS


def _prose_of_python(path: Path) -> str:
    """The comments and strings of a module: where its prose names variables (its code's own
    identifiers, such as GATEWAY_OWNED_FIELDS, are not variables)."""
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    return "\n".join(t.string for t in tokens if t.type in (tokenize.COMMENT, tokenize.STRING))


def _documents() -> list[tuple[str, str]]:
    out = [(name, (REPO / name).read_text()) for name in DOCUMENTS]
    out += [(str(p.relative_to(REPO)), p.read_text()) for p in sorted(DEPLOY.rglob("*")) if p.is_file()]
    out += [(str(p.relative_to(REPO)), _prose_of_python(p)) for p in sorted((REPO / "gateway").rglob("*.py"))]
    return out


@pytest.mark.parametrize("source, text", _documents(), ids=lambda value: value if "\n" not in value else "")
def test_every_gateway_variable_named_is_a_setting(source, text):
    assert sorted(name for name in _named_in(text) if not _known(name)) == [], source


def test_every_variable_the_manifests_set_is_a_setting():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    set_by = {f"compose:{name}": set(service.get("environment", {})) for name, service in compose["services"].items()}
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        set_by[f"k8s:{container['name']}"] = {env["name"] for env in container.get("env", [])}
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.yaml").read_text())
    set_by["k8s:secret"] = set(secret["stringData"])
    dockerfile_env = re.search(r"^ENV (.*?)(?=^\S)", (REPO / "Dockerfile").read_text(), re.MULTILINE | re.DOTALL)
    set_by["Dockerfile"] = set(re.findall(r"(GATEWAY_[A-Z0-9_]+)=", dockerfile_env.group(1)))
    unknown = {
        where: sorted(n for n in names if n.startswith("GATEWAY_") and n not in SETTINGS)
        for where, names in set_by.items()
    }
    assert {where: names for where, names in unknown.items() if names} == {}


def test_every_setting_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    assert sorted(name for name in SETTINGS if name not in _named_in(readme)) == []
