"""Routing: from what the client sent to an ordered list of candidates, as plain functions
over data (the request's facts, the config snapshot, observed stats). No I/O here."""
