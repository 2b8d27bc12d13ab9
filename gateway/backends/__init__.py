"""Backend adapters: one module per wire-protocol family, one interface (`base.Backend`).

Adapters speak the upstream's protocol and hand back OpenAI-shaped bytes; they do not
route, retry or account. Vendor differences are data in `gateway.config.vendors`.
"""
