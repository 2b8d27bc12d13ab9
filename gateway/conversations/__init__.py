"""Responses the gateway produced, kept so that `previous_response_id` can continue them.

`store` is the interface and the record, `sqlite_store` the embedded implementation (a file
in the data directory), `redis_store` the shared one (every replica sees every response),
`stores` chooses between them from the settings. Nothing here knows HTTP or the Responses
wire format beyond "a JSON object with an `id`": the route (`gateway.api.responses`) decides
what to store and who may read it.
"""
