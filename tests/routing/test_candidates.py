from gateway.routing.candidates import gather
from gateway.routing.resolve import resolve
from tests.routing.support import POLICY, snapshot_from

SNAP = snapshot_from(POLICY)


def keys(candidates):
    return [(c.offer.backend, c.offer.model, c.tier) for c in candidates]


def test_route_without_a_task_list_offers_its_models_in_one_tier():
    assert keys(gather([resolve("auto", SNAP)], "chat", SNAP)) == [
        ("cheap", "small/fast", 0),
        ("cheap", "big/long", 0),
        ("pricey", "big/long", 0),
    ]


def test_task_list_comes_first_and_route_models_follow_as_a_fallback_tier():
    assert keys(gather([resolve("auto", SNAP)], "code", SNAP)) == [
        ("pricey", "code/coder", 0),
        ("cheap", "small/fast", 1),
        ("cheap", "big/long", 1),
        ("pricey", "big/long", 1),
    ]


def test_task_fallback_false_keeps_only_the_task_list():
    snap = snapshot_from(POLICY.replace("    tasks:\n", "    task_fallback: false\n    tasks:\n"))
    assert keys(gather([resolve("auto", snap)], "code", snap)) == [("pricey", "code/coder", 0)]


def test_canonical_id_offers_every_backend_serving_it():
    assert keys(gather([resolve("big/long", SNAP)], "chat", SNAP)) == [
        ("cheap", "big/long", 0),
        ("pricey", "big/long", 0),
    ]


def test_models_array_entries_are_later_tiers_and_repeats_are_dropped():
    targets = [resolve(n, SNAP) for n in ("code/coder", "auto")]
    assert keys(gather(targets, "chat", SNAP)) == [
        ("pricey", "code/coder", 0),
        ("cheap", "small/fast", 1),
        ("cheap", "big/long", 1),
        ("pricey", "big/long", 1),
    ]
    assert [c.position for c in gather(targets, "chat", SNAP)] == [0, 1, 2, 3]


def test_disabled_backends_offer_nothing():
    snap = snapshot_from(
        POLICY.replace("  pricey:\n    type: openai\n", "  pricey:\n    type: openai\n    enabled: false\n")
    )
    assert keys(gather([resolve("big/long", snap)], "chat", snap)) == [("cheap", "big/long", 0)]


def test_candidates_are_worked_out_once_per_snapshot_and_remembered_lists_stay_bounded(monkeypatch):
    from gateway.routing import candidates

    snap = snapshot_from(POLICY)
    first = gather([resolve("auto", snap)], "code", snap)
    assert gather([resolve("auto", snap)], "code", snap) is first  # shared, not rebuilt
    monkeypatch.setattr(candidates, "MAX_REMEMBERED_LISTS", 2)
    arrays = [("code/coder", "auto"), ("small/fast", "auto"), ("big/long", "code/coder")]
    results = [gather([resolve(n, snap) for n in names], "chat", snap) for names in arrays]
    assert sum(1 for key in snap.memo if key[0] == "candidate lists") == 2  # clients choose these: capped
    assert keys(results[2]) == [("cheap", "big/long", 0), ("pricey", "big/long", 0), ("pricey", "code/coder", 1)]
    assert keys(gather([resolve(n, snap) for n in arrays[2]], "chat", snap)) == keys(results[2])
    reloaded = snapshot_from(POLICY)
    assert gather([resolve("auto", reloaded)], "code", reloaded) is not first  # a new config, new lists


def test_a_long_models_list_is_combined_but_not_remembered():
    """Counted alone, 1,024 lists of 100,000 names (an alias matches any) were held. The same
    route named over and over stands here for the many names one alias glob matches."""
    snap = snapshot_from(POLICY)
    short = [resolve(n, snap) for n in ("code/coder", "auto")]
    long = [resolve("big/long", snap)] + [resolve("auto", snap)] * 2_000  # 8,000+ characters of names
    assert keys(gather(long, "chat", snap)) == [
        ("cheap", "big/long", 0),
        ("pricey", "big/long", 0),
        ("cheap", "small/fast", 1),
    ]
    gather(short, "chat", snap)
    lists = [key[1] for key in snap.memo if key[0] == "candidate lists"]
    assert lists == [("code/coder", "auto")]
