"""The router: accepts tasks, journals them, and hands them to actors that have credit."""

from .loop import JournalFailed, RecentKeys, Router, RouterConfig, main

__all__ = ["JournalFailed", "RecentKeys", "Router", "RouterConfig", "main"]
