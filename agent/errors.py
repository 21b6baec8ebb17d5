"""The one error family for everything a user can cause or fix.

Every error a user can act on (a bad config value, a database that cannot be
used, a missing capture prerequisite, a second agent on the same database...)
is a :class:`LumenError` carrying ``problem`` and, when there is one, ``fix``.
The CLI turns any of them into its single ``error: ...`` line and exit 2;
nothing else needs to know the subclasses.
"""

from __future__ import annotations


class LumenError(Exception):
    """``problem``: what is wrong, one line; ``fix``: what to do about it (may be empty)."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} (fix: {fix})" if fix else problem)
