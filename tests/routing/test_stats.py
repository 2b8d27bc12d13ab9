from gateway.routing.stats import Observed, StatsBook, ewma


def test_ewma_starts_as_a_plain_mean_then_moves_by_alpha():
    assert ewma(None, 2.0, 0.3) == 2.0
    assert ewma(2.0, 1.0, 0.25, samples=1) == 1.5  # two samples: their mean
    assert abs(ewma(1.5, 0.0, 0.25, samples=2) - 1.0) < 1e-12  # three: still the mean
    assert abs(ewma(2.0, 1.0, 0.25, samples=10) - 1.75) < 1e-12  # later: alpha


def test_book_keeps_ttft_and_throughput_apart_with_their_counts():
    book = StatsBook()
    key = ("b", "m/x")
    assert book.get(key) is None
    book.record_ttft(key, 1.0, 0.5, now=10)
    book.record_ttft(key, 0.0, 0.5, now=11)
    book.record_throughput(key, 100.0, 0.5, now=12)
    seen = book.get(key)
    assert seen.ttft_s == 0.5 and seen.samples == 2
    assert seen.tokens_per_s == 100.0 and seen.tps_samples == 1 and seen.updated_at == 12
    book.replace(key, Observed(ttft_s=9.0, samples=40))
    assert book.get(key).ttft_s == 9.0 and book.items() == [(key, book.get(key))]
