"""The proxy path: send a routed request to its candidates in turn and relay the answer.

`attempts` runs the fallback loop, `relay` moves bytes to the client while reading usage
out of them, `outcome` is the record of one call that usage and metrics observe.
"""
