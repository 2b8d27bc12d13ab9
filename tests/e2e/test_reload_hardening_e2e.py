"""A running gateway's hot reload survives files that used to kill its watcher, and keeps its
last-good copy private (it may hold literal upstream keys)."""

from __future__ import annotations

import stat

import httpx

from gateway.config.reload import last_good_path
from tests.e2e.test_reload_e2e import ask, policy
from tests.support.poll import poll
from tests.support.scrape import scrape


def reloads(gw, result: str) -> float:
    return scrape(gw.url).value("gateway_config_reloads_total", result=result)


def test_the_data_dir_and_the_last_good_copy_are_private(start_gateway, upstream, tmp_path):
    config = tmp_path / "policy.yaml"
    text = policy(upstream.base_url)
    config.write_text(text)
    config.chmod(0o600)
    data = tmp_path / "fresh" / "data"
    gw = start_gateway("", config_path=config, env={"GATEWAY_DATA_DIR": str(data)})
    assert ask(gw).status_code == 200
    keep = last_good_path(data, config)
    assert keep.read_text() == text
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(keep.stat().st_mode) == 0o600
    edited = policy(upstream.base_url, "m/two")
    gw.write_config(edited)
    poll(lambda: keep.read_text() == edited, what="the reloaded copy to be kept", context=gw.log)
    assert stat.S_IMODE(keep.stat().st_mode) == 0o600


def test_a_non_utf8_file_then_a_valid_edit_applies_the_edit(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url))
    assert ask(gw).headers["x-gateway-model"] == "m/one"
    gw.config_path.with_suffix(".tmp").write_bytes(policy(upstream.base_url, "m/two").encode() + b"# caf\xe9\n")
    gw.config_path.with_suffix(".tmp").replace(gw.config_path)
    poll(lambda: reloads(gw, "failure") == 1, what="the rejection to be counted", context=gw.log)
    error = httpx.get(gw.url + "/admin/status").json()["config"]["last_reload_error"]
    assert len(error) == 1 and error[0].startswith(f"cannot read {gw.config_path}: not UTF-8 text (byte 0xe9 at")
    assert ask(gw).headers["x-gateway-model"] == "m/one"
    gw.write_config(policy(upstream.base_url, "m/two"))
    poll(lambda: ask(gw).headers["x-gateway-model"] == "m/two", what="the valid edit", context=gw.log)
    assert reloads(gw, "failure") == 1 and reloads(gw, "success") == 1


def test_a_base_url_httpx_cannot_parse_is_rejected_and_not_kept(start_gateway, upstream):
    gw = start_gateway(policy(upstream.base_url))
    keep = last_good_path(gw.dir / "data", gw.config_path)
    good = keep.read_text()
    gw.write_config(policy("http://[::1/v1", "m/two"))
    poll(lambda: reloads(gw, "failure") == 1, what="the rejection to be counted", context=gw.log)
    error = httpx.get(gw.url + "/admin/status").json()["config"]["last_reload_error"]
    assert len(error) == 1 and error[0].endswith("base_url is not a valid URL (Invalid port: ':1')")
    assert keep.read_text() == good
    assert ask(gw).headers["x-gateway-model"] == "m/one"
    gw.write_config(policy(upstream.base_url, "m/two"))  # the watcher still runs
    poll(lambda: ask(gw).headers["x-gateway-model"] == "m/two", what="the next valid edit", context=gw.log)
    assert reloads(gw, "success") == 1


def test_two_gateways_sharing_a_data_directory_keep_each_its_own_last_good_copy(start_gateway, upstream, tmp_path):
    """Hostile testing: the data directory is per user, and the copy was one file in it, so
    of two gateways one user runs with different policies, the one written last was the copy
    of both: a worker of the other, restarted on a broken file, served the wrong policy."""
    data = tmp_path / "shared"
    texts = {}
    for name, model in (("a", "m/one"), ("b", "m/two")):
        config = tmp_path / f"{name}.yaml"
        texts[config] = policy(upstream.base_url, model)
        config.write_text(texts[config])
        gw = start_gateway("", config_path=config, env={"GATEWAY_DATA_DIR": str(data)})
        assert ask(gw).headers["x-gateway-model"] == model
    for config, text in texts.items():
        assert last_good_path(data, config).read_text() == text
