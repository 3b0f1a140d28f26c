"""ClickHouse (server or chDB) as eventscope's store past one machine: docs/scaling.md."""

from __future__ import annotations

__all__: list[str] = []
