import asyncio

import pytest

from gateway.config.loader import ConfigError
from gateway.config.reload import ConfigHolder
from tests.support.poll import apoll

GOOD = """\
backends:
  mock:
    type: mock
    models:
      mock/a: {}
      mock/b: {}
routes:
  auto:
    models: [mock/a]
"""
EDITED = GOOD.replace("models: [mock/a]", "models: [mock/b]")
BROKEN = GOOD.replace("models: [mock/a]", "strategy: fastest\n    models: [mock/zzz]")


@pytest.fixture
def policy(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(GOOD)
    return path


def test_a_valid_edit_swaps_and_a_broken_one_changes_nothing(policy, tmp_path):
    swapped, results = [], []
    holder = ConfigHolder(policy, on_swap=swapped.append, last_good=tmp_path / "data" / "last-good.yaml")
    holder.on_result(results.append)
    first = holder.current
    assert holder.reload() is False and results == []  # unchanged file: nothing to do
    policy.write_text(EDITED)
    assert holder.reload() is True
    assert holder.current.routes["auto"].models == ["mock/b"] and swapped == [holder.current]
    assert first.routes["auto"].models == ["mock/a"]  # requests holding the old snapshot keep it
    edited = holder.current
    policy.write_text(BROKEN)
    assert holder.reload() is False
    assert holder.current is edited and results == ["success", "failure"]
    assert holder.status.failed == 1 and holder.status.ok == 1
    assert holder.status.last_error == [
        "routes.auto.strategy (line 9): Input should be 'cost', 'latency', 'throughput', 'ordered' or 'weighted'"
    ]
    assert holder.reload() is False and holder.status.failed == 1  # the same broken file is not re-logged
    policy.write_text(EDITED + "\n")
    assert holder.reload() is True and holder.status.last_error == []


def test_problems_match_what_validate_prints(policy):
    from gateway.config.loader import load_config

    policy.write_text(BROKEN)
    with pytest.raises(ConfigError) as e:
        load_config(policy)
    policy.write_text(GOOD)
    holder = ConfigHolder(policy)
    policy.write_text(BROKEN)
    holder.reload()
    holder_errors = holder.status.last_error
    assert holder_errors == [str(p) for p in e.value.problems]


def test_a_worker_starting_on_a_broken_file_serves_the_last_good_copy(policy, tmp_path):
    keep = tmp_path / "data" / "last-good.yaml"
    ConfigHolder(policy, last_good=keep)
    assert keep.read_text() == GOOD
    policy.write_text(BROKEN)
    holder = ConfigHolder(policy, last_good=keep)
    assert holder.current.routes["auto"].models == ["mock/a"]
    assert holder.status.failed == 1 and any("routes.auto.strategy" in e for e in holder.status.last_error)
    assert holder.reload() is False and holder.status.failed == 1  # not re-reported every poll
    policy.write_text(EDITED)
    assert holder.reload() is True and holder.current.routes["auto"].models == ["mock/b"]


def test_without_a_last_good_copy_a_broken_file_still_fails_startup(policy, tmp_path):
    policy.write_text(BROKEN)
    with pytest.raises(ConfigError):
        ConfigHolder(policy, last_good=tmp_path / "none.yaml")


async def test_watch_picks_up_an_edit_by_itself(policy):
    holder = ConfigHolder(policy)
    task = asyncio.create_task(holder.watch(poll_s=0.2))
    try:
        tmp = policy.with_suffix(".tmp")
        tmp.write_text(EDITED)
        tmp.replace(policy)  # editors and ConfigMaps replace the file
        await apoll(lambda: holder.current.routes["auto"].models == ["mock/b"], what="the edit to be picked up")
    finally:
        task.cancel()
