"""The dashboard at ``/`` (server-rendered Jinja2 pages, htmx for live parts)."""

from __future__ import annotations

from typing import Any


def mount(app: Any) -> None:
    """Add the dashboard routes to ``app``."""
