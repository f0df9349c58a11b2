"""connector-sync: keep data from many connectors fresh."""

from __future__ import annotations

__version__ = "0.1.0"
