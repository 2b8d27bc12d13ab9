from gateway.routing.deltas import MAX_SAMPLES, PendingShare


def test_failures_count_from_the_last_success():
    share = PendingShare()
    share.failure(1.0, 3)
    share.success()
    share.failure(2.0, 5)
    assert (share.reset, share.failures, share.failed_at, share.threshold) == (True, 1, 2.0, 5)


def test_samples_keep_the_latest_but_count_all():
    share = PendingShare()
    for i in range(MAX_SAMPLES + 10):
        share.sample_ttft(float(i), 0.3, float(i))
    assert len(share.ttft) == MAX_SAMPLES and share.ttft[0] == 10.0 and share.ttft[-1] == MAX_SAMPLES + 9
    assert share.ttft_count == MAX_SAMPLES + 10 and share.updated_at == MAX_SAMPLES + 9


def test_an_unsent_share_followed_by_a_newer_one_folds_in_order():
    older, newer = PendingShare(), PendingShare()
    older.failure(1.0, 3)
    older.failure(2.0, 3)
    older.block(50.0)
    older.sample_ttft(0.5, 0.3, 2.0)
    newer.failure(3.0, 4)
    newer.block(40.0)
    newer.sample_ttft(0.7, 0.2, 3.0)
    merged = older.followed_by(newer)
    assert (merged.reset, merged.failures, merged.failed_at, merged.threshold) == (False, 3, 3.0, 4)
    assert merged.blocked_until == 50.0 and merged.ttft == [0.5, 0.7] and merged.ttft_count == 2
    assert (merged.alpha, merged.updated_at) == (0.2, 3.0)
    newer.success()  # a success after both: the older failures no longer matter
    merged = older.followed_by(newer)
    assert (merged.reset, merged.failures) == (True, 0)
