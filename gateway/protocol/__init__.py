"""OpenAI wire protocol: the error shape and the few request facts the gateway reads."""
