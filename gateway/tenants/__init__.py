"""Tenants: virtual keys, teams, their limits and the admin audit log.

`keys` holds the types and the hashing, `store` the one store interface with its SQLite and
Redis implementations, `directory` the in-process cache the request path reads, `limits`
the counters (RPM, TPM, concurrency, budgets) with reserve-then-settle, `throttle` the
failed-authentication throttle. HTTP and CLI live in gateway.api.keys and gateway.cli.keys.
"""
