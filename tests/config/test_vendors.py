"""The vendor registry is the one source of truth for backend types: the schema accepts a
type iff the registry has it, the refusal lists them, and the adapter a vendor names is the
one the pool builds."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.backends.base import Backend
from gateway.backends.pool import create_backend
from gateway.config.loader import ConfigError, parse_config
from gateway.config.vendors import ADAPTERS, VENDORS

REPO = Path(__file__).resolve().parents[2]


def _policy(backend_type: str) -> str:
    return textwrap.dedent(
        f"""
        backends:
          b:
            type: {backend_type}
            base_url: http://127.0.0.1:9/v1
            api_key: sk-test
            models: {{acme/m: {{}}}}
        """
    )


@pytest.mark.parametrize("backend_type", list(VENDORS))
def test_every_registered_type_is_accepted_and_builds_its_adapter(backend_type):
    config, _ = parse_config(_policy(backend_type))
    backend = create_backend("b", config.backends["b"])
    module_name, _, class_name = VENDORS[backend_type].adapter_class.partition(":")
    assert type(backend) is getattr(importlib.import_module(module_name), class_name)


def test_an_unregistered_type_is_refused_with_every_registered_type_listed():
    with pytest.raises(ConfigError) as caught:
        parse_config(_policy("acme"))
    [problem] = caught.value.problems
    assert problem.path == "backends.b.type"
    quoted = ", ".join(f"'{t}'" for t in list(VENDORS)[:-1]) + f" or '{list(VENDORS)[-1]}'"
    assert problem.message == f"Input should be {quoted}"


@pytest.mark.parametrize("family", list(ADAPTERS))
def test_every_adapter_path_names_a_backend_class(family):
    module_name, _, class_name = ADAPTERS[family].partition(":")
    assert issubclass(getattr(importlib.import_module(module_name), class_name), Backend)


def test_a_new_openai_compatible_vendor_is_one_registry_entry():
    """What policies/README.md promises: add the entry, and the YAML accepts the type and
    the gateway builds it with the entry's defaults. Run in a fresh interpreter, as the
    entry must exist before the schema is imported (as it would in the source file)."""
    script = textwrap.dedent(
        """
        from gateway.config.vendors import VENDORS, Vendor
        VENDORS["acme"] = Vendor("openai_compat", "https://api.acme.example/v1", "ACME_API_KEY")

        from gateway.backends.pool import create_backend
        from gateway.config.loader import parse_config

        config, warnings = parse_config("backends:\\n  a:\\n    type: acme\\n    models: {acme/m: {}}\\n")
        backend = create_backend("a", config.backends["a"])
        print(type(backend).__name__, backend.base_url, warnings)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "OpenAICompatBackend https://api.acme.example/v1 ['backend `a` (acme) has no API key (set `api_key:`, e.g. `api_key: ${ACME_API_KEY}`): disabled']"
    )
