"""Placeholder: filled in by its own change."""

from __future__ import annotations


def install(agent, config) -> None:
    """Attach to a running Agent (listeners, control ops, threads)."""
