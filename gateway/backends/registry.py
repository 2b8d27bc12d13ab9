"""Re-export of the vendor registry, which now lives in `gateway.config.vendors` (the schema
reads it, so it sits below `config`).

Kept only so that modules being edited on other branches (`pool`, `openai_compat`) keep
importing from here; to be removed once those branches are merged and import
`gateway.config.vendors` directly.
"""

from __future__ import annotations

from gateway.config.vendors import ADAPTERS, VENDORS, Vendor

__all__ = ["ADAPTERS", "VENDORS", "Vendor"]
