"""A backend's base_url must be a URL the adapters can call: checked when the file is validated,
so `gateway validate` and a hot reload reject what would otherwise fail inside the backend pool."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gateway.backends.pool import BackendPool
from gateway.config.loader import ConfigError, parse_config
from gateway.config.reload import ConfigHolder
from gateway.config.snapshot import ConfigSnapshot
from tests.support.services import REPO


def policy(base_url: str) -> str:
    return textwrap.dedent(f"""\
        backends:
          up:
            type: openai
            base_url: "{base_url}"
            models:
              qwen/qwen3-32b: {{}}
        routes:
          auto: {{models: [qwen/qwen3-32b]}}
        """)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://[::1/v1", "is not a valid URL (Invalid port: ':1')"),
        ("http://host:99999/v1", "port must be between 1 and 65535, got 99999"),
        ("http://host:0/v1", "port must be between 1 and 65535, got 0"),
        ("ftp://host/v1", "must start with http:// or https://, got `ftp://host/v1`"),
        ("localhost:8000/v1", "must start with http:// or https://, got `localhost:8000/v1`"),
        ("http:///v1", "has no host: `http:///v1`"),
        ("http://exa mple.com/v1", "host `exa mple.com` is not a valid host name or IP address"),
        ("http://bücher.example/v1", "host `bücher.example` is not a valid host name or IP address"),
        ("https://user:pw@api.example.com/v1", "must not carry credentials (user:password@): set api_key or headers"),
        ("https://api.example.com/v1?key=k", "must not have a query or fragment: `https://api.example.com/v1?key=k`"),
        ("https://api.example.com/my api/v1", "path `/my api/v1` has characters to percent-encode (write them %XX)"),
        ("https://api.example.com/é/v1", "path `/é/v1` has characters to percent-encode (write them %XX)"),
    ],
)
def test_a_base_url_adapters_cannot_use_is_rejected_naming_the_field(url, reason):
    with pytest.raises(ConfigError) as caught:
        parse_config(policy(url), "policy.yaml")
    assert [(p.path, p.line, p.message) for p in caught.value.problems] == [
        ("backends.up.base_url", 4, f"base_url {reason}")
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "https://api.example.com/v1",
        "http://[::1]:8000/v1",
        "http://vllm/v1",
        "https://api.example.com/my%20api/v1",
    ],
)
def test_usable_base_urls_pass_and_build_an_adapter(url):
    config, _ = parse_config(policy(url), "policy.yaml")
    assert config.backends["up"].base_url == url
    BackendPool().apply(ConfigSnapshot.build(config))  # what a reload does with it: no InvalidURL


def test_an_empty_base_url_means_the_vendor_default_or_none(monkeypatch):
    monkeypatch.delenv("GW_TEST_UNSET_URL", raising=False)
    text = "backends:\n  g: {type: groq, base_url: '${GW_TEST_UNSET_URL}', models: {qwen/qwen3-32b: {}}}\n"
    config, _ = parse_config(text, "policy.yaml")
    assert config.backends["g"].base_url is None
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace("groq", "openai"), "policy.yaml")
    assert [str(p) for p in caught.value.problems] == ["backends.g (line 2): backends of type `openai` need a base_url"]


def test_gateway_validate_rejects_an_unparsable_base_url(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(policy("http://[::1/v1"))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "validate", str(path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert (
        "backends.up.base_url (line 4): base_url is not a valid URL (Invalid port: ':1')" in done.stdout + done.stderr
    )


def test_a_reload_with_an_unparsable_base_url_keeps_the_old_config_and_the_last_good_copy(tmp_path):
    path = tmp_path / "policy.yaml"
    good = policy("http://127.0.0.1:8000/v1")
    path.write_text(good)
    keep = tmp_path / "data" / "last-good.yaml"
    pool = BackendPool()
    results = []
    holder = ConfigHolder(path, on_swap=pool.apply, last_good=keep)
    holder.on_result(results.append)
    pool.apply(holder.current)
    adapter = pool.get("up")
    path.write_text(policy("http://[::1/v1"))
    assert holder.reload() is False
    assert results == ["failure"]
    assert holder.status.last_error == [
        "backends.up.base_url (line 4): base_url is not a valid URL (Invalid port: ':1')"
    ]
    assert holder.current.backends["up"].base_url == "http://127.0.0.1:8000/v1" and pool.get("up") is adapter
    assert keep.read_text() == good
