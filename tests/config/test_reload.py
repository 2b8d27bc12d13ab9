import asyncio
import stat

import pytest

from gateway.config import reload as reload_module
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
    assert swapped == [first]  # the first snapshot is applied at construction
    assert holder.reload() is False and results == []  # unchanged file: nothing to do
    policy.write_text(EDITED)
    assert holder.reload() is True
    assert holder.current.routes["auto"].models == ["mock/b"] and swapped == [first, holder.current]
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


def test_a_last_good_copy_that_is_not_utf8_fails_startup_with_the_policys_own_problems(policy, tmp_path):
    """The copy was read in the locale's encoding, and one that is not UTF-8 (a disk error, an
    edit by hand) ended startup with a UnicodeDecodeError traceback instead of the broken
    policy's problems."""
    keep = tmp_path / "data" / "last-good.yaml"
    ConfigHolder(policy, last_good=keep)
    keep.write_bytes(b"routes: {auto: {models: [caf\xe9]}}\n")
    policy.write_text(BROKEN)
    with pytest.raises(ConfigError) as refused:
        ConfigHolder(policy, last_good=keep)
    assert any("routes.auto.strategy" in str(problem) for problem in refused.value.problems)


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


def test_last_good_copy_is_private_and_its_directory_too(policy, tmp_path):
    """The copy may hold literal upstream keys: readable by the gateway's user only."""
    policy.chmod(0o600)
    data = tmp_path / "fresh" / "data"
    keep = data / "last-good.yaml"
    ConfigHolder(policy, last_good=keep)
    assert keep.read_text() == GOOD
    assert stat.S_IMODE(keep.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    policy.write_text(EDITED)
    holder = ConfigHolder(policy, last_good=keep)
    policy.write_text(GOOD)
    assert holder.reload() is True
    assert keep.read_text() == GOOD and stat.S_IMODE(keep.stat().st_mode) == 0o600
    # No temp file left behind; the lock the workers share stays, empty and private.
    assert sorted(p.name for p in data.iterdir()) == [".last-good.yaml.lock", "last-good.yaml"]
    assert stat.S_IMODE((data / ".last-good.yaml.lock").stat().st_mode) == 0o600


def test_a_worker_behind_the_file_does_not_overwrite_a_newer_last_good_copy(policy, tmp_path):
    """Hostile testing (a CI run of the ConfigMap e2e test): two workers share the copy. One
    started slowly: it read the file, and while it applied that, the other reloaded an edit
    and kept it. The slow one then kept its older text over the newer copy; the file turned
    broken next, and a restarted worker came up on the config before the edit."""
    keep = tmp_path / "data" / "last-good.yaml"
    ConfigHolder(policy, last_good=keep)  # both workers started on GOOD

    def the_other_worker_reloads_meanwhile(snapshot):
        policy.write_text(EDITED)
        keep.write_text(EDITED)

    slow = ConfigHolder(policy, on_swap=the_other_worker_reloads_meanwhile, last_good=keep)
    assert slow.current.routes["auto"].models == ["mock/a"]  # it serves what it read...
    assert keep.read_text() == EDITED  # ...and keeps nothing older than the copy
    policy.write_text(BROKEN)
    restarted = ConfigHolder(policy, last_good=keep)
    assert restarted.current.routes["auto"].models == ["mock/b"]


def test_a_file_that_is_not_utf8_is_rejected_and_the_next_edit_applies(policy, tmp_path):
    results = []
    keep = tmp_path / "data" / "last-good.yaml"
    holder = ConfigHolder(policy, last_good=keep)
    holder.on_result(results.append)
    policy.write_bytes(GOOD.encode() + b"# caf\xe9\n")
    assert holder.reload() is False
    assert results == ["failure"] and holder.status.failed == 1
    assert holder.status.last_error == [f"cannot read {policy}: not UTF-8 text (byte 0xe9 at offset {len(GOOD) + 5})"]
    assert holder.current.routes["auto"].models == ["mock/a"] and keep.read_text() == GOOD
    policy.write_text(EDITED)
    assert holder.reload() is True and results == ["failure", "success"]
    assert holder.current.routes["auto"].models == ["mock/b"] and keep.read_text() == EDITED


def test_a_snapshot_the_pool_cannot_apply_is_rejected_and_not_kept(policy, tmp_path):
    """on_swap raising: the reload fails, the old snapshot serves, the last-good copy stays."""
    keep = tmp_path / "data" / "last-good.yaml"
    applied = []

    def apply(snapshot):
        if snapshot.routes["auto"].models == ["mock/b"]:
            raise ValueError("cannot build the adapter")
        applied.append(snapshot)

    results = []
    holder = ConfigHolder(policy, on_swap=apply, last_good=keep)
    holder.on_result(results.append)
    first = holder.current
    policy.write_text(EDITED)
    assert holder.reload() is False
    assert holder.current is first and applied == [first] and results == ["failure"]
    assert holder.status.ok == 0 and holder.status.failed == 1
    assert holder.status.last_error == ["cannot apply the new config: ValueError: cannot build the adapter"]
    assert keep.read_text() == GOOD
    assert holder.reload() is False and holder.status.failed == 1  # the same file is not retried every poll
    policy.write_text(GOOD + "\n")
    assert holder.reload() is True and applied == [first, holder.current] and keep.read_text() == GOOD + "\n"


def test_at_start_a_file_the_pool_cannot_apply_is_not_kept_and_the_last_good_copy_serves(policy, tmp_path):
    keep = tmp_path / "data" / "last-good.yaml"
    ConfigHolder(policy, last_good=keep)
    assert keep.read_text() == GOOD
    policy.write_text(EDITED)
    applied = []

    def apply(snapshot):
        if snapshot.routes["auto"].models == ["mock/b"]:
            raise ValueError("cannot build the adapter")
        applied.append(snapshot)

    holder = ConfigHolder(policy, on_swap=apply, last_good=keep)  # a worker starting on that file
    assert holder.current.routes["auto"].models == ["mock/a"] and applied == [holder.current]
    assert keep.read_text() == GOOD
    assert holder.status.failed == 1
    assert holder.status.last_error == ["<file>: cannot apply the config: ValueError: cannot build the adapter"]
    keep.unlink()
    with pytest.raises(ConfigError) as caught:  # and without a copy to fall back on, it fails to start
        ConfigHolder(policy, on_swap=apply, last_good=keep)
    assert [str(p) for p in caught.value.problems] == [
        "<file>: cannot apply the config: ValueError: cannot build the adapter"
    ]
    assert not keep.exists()


async def test_the_watcher_survives_a_bad_file_and_applies_the_next_edit(policy):
    holder = ConfigHolder(policy)
    task = asyncio.create_task(holder.watch(poll_s=0.1))
    try:
        tmp = policy.with_suffix(".tmp")
        tmp.write_bytes(b"\xff\xfe not yaml, not utf-8")
        tmp.replace(policy)
        await apoll(lambda: holder.status.failed == 1, what="the bad file to be rejected")
        tmp.write_text(EDITED)
        tmp.replace(policy)
        await apoll(lambda: holder.current.routes["auto"].models == ["mock/b"], what="the valid edit to be applied")
        assert not task.done()
        assert holder.status.failed == 1 and holder.status.ok == 1
    finally:
        task.cancel()


async def test_the_watcher_counts_and_survives_an_unexpected_error(policy, monkeypatch):
    """Whatever a reload raises, the watcher logs it, counts a failure and keeps watching."""
    results = []
    holder = ConfigHolder(policy)
    holder.on_result(results.append)
    calls = []
    real_parse = reload_module.parse_config

    def parse_once_broken(text, source):
        calls.append(source)
        if len(calls) == 1:
            raise RuntimeError("a bug in the loader")
        return real_parse(text, source)

    monkeypatch.setattr(reload_module, "parse_config", parse_once_broken)
    task = asyncio.create_task(holder.watch(poll_s=0.1))
    try:
        policy.write_text(EDITED)
        await apoll(lambda: results == ["failure"], what="the failed reload to be counted")
        assert holder.status.last_error == ["reload failed: RuntimeError: a bug in the loader"]
        policy.write_text(EDITED + "\n")  # the same file is not retried every poll; an edit is
        await apoll(lambda: holder.current.routes["auto"].models == ["mock/b"], what="the edit to be applied")
        assert not task.done()
        assert results == ["failure", "success"] and holder.status.failed == 1 and holder.status.ok == 1
        assert len(calls) == 2
    finally:
        task.cancel()


def test_a_file_that_went_missing_and_came_back_unchanged_clears_the_error(policy, tmp_path):
    """Restored as it was (the usual fix: from version control), the file matched the digest
    it had before it went missing, so it was never read again and /admin/status kept saying
    `cannot read` for ever; while missing, every poll logged and counted a failed reload."""
    holder = ConfigHolder(policy, last_good=tmp_path / "data" / "last-good.yaml")
    policy.unlink()
    assert holder.reload() is False and holder.status.failed == 1
    assert holder.status.last_error == [f"cannot read {policy}: No such file or directory"]
    assert holder.reload() is False and holder.status.failed == 1  # the next poll: not again
    policy.write_text(GOOD)
    holder.reload()
    assert holder.status.last_error == [] and holder.status.failed == 1
    assert holder.current.routes["auto"].models == ["mock/a"]


async def test_a_slow_parse_does_not_stop_the_event_loop(policy, monkeypatch):
    """Hostile testing: a reload parsed the file on the event loop, so a large policy (a
    thousand models, 87 KB: 0.55 s) stopped every request and stream of the worker for as
    long as its parse took, on every edit. The file is now read and parsed in a thread."""
    import time

    real_parse = reload_module.parse_config

    def slow_parse(text, source):
        time.sleep(0.5)  # what a large policy costs, without writing one
        return real_parse(text, source)

    holder = ConfigHolder(policy)
    monkeypatch.setattr(reload_module, "parse_config", slow_parse)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    task = asyncio.create_task(holder.watch(poll_s=0.1))
    try:
        policy.write_text(EDITED)
        await apoll(lambda: holder.current.routes["auto"].models == ["mock/b"], what="the edit to be applied")
        assert holder.status.ok == 1 and holder.status.failed == 0
        await asyncio.sleep(0.05)  # the ticker's turn after the reload: a stall shows as its gap
        assert max(gaps) < 0.25, f"the loop stood still for {max(gaps):.2f} s"
    finally:
        task.cancel()
        ticker.cancel()


def test_a_file_far_larger_than_a_policy_is_a_rejected_reload(policy):
    from gateway.config.loader import MAX_POLICY_BYTES

    holder = ConfigHolder(policy)
    policy.write_bytes(GOOD.encode() + b"# " + b"x" * MAX_POLICY_BYTES + b"\n")
    assert holder.reload() is False and holder.status.failed == 1
    assert holder.status.last_error == [
        f"cannot read {policy}: larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy"
    ]
    assert holder.current.routes["auto"].models == ["mock/a"]
