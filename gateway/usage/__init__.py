"""The usage ledger: one `UsageEvent` per call, stored in SQLite or Redis, ranked like OpenRouter.

`events` (what is recorded), `aggregates` (the per-day counters both stores keep),
`store` (the one interface), `sqlite_store` / `redis_store` (its implementations),
`recorder` (the observer that buffers and writes off the hot path), `writer` (the child
process that does the writing, off the proxy's core), `rankings` (pure
computation of the rankings from per-day aggregates), `jsonl` (import/export).
"""
