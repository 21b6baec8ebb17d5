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


def user_error_types() -> tuple[type[BaseException], ...]:
    """What the CLI reports as one ``error:`` line: ours, plus what the file
    system and DuckDB say about a path the user gave."""
    import duckdb  # here: the agent's hooks import this module and need no DuckDB

    return (LumenError, duckdb.Error, OSError)


def user_error_line(exc: BaseException) -> str:
    """``exc`` as the CLI's one line: the problem, then the fix."""
    text = exc.problem if isinstance(exc, LumenError) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    if isinstance(exc, LumenError) and exc.fix:
        line += f" (fix: {exc.fix})"
    return line
