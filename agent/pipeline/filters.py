"""Which processes the agent captures: include and exclude rules.

Rules match a process by name (comm), executable path, user, systemd unit or
container id, with shell-style wildcards (``python*``, ``/opt/*``).  A
process is captured when it matches no exclude rule and, if any include rule
is set, at least one include rule.  The agent itself is always excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from lumen_agent.pipeline.attribution import ProcessInfo

FIELDS = ("process", "exe", "user", "unit", "container")


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    include: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_trivial(self) -> bool:
        return not any(self.include.values()) and not any(self.exclude.values())

    def allows(self, info: ProcessInfo) -> bool:
        values = {
            "process": info.process,
            "exe": info.exe,
            "user": info.user,
            "unit": info.unit,
            "container": info.container_id,
        }
        if _matches_any(self.exclude, values):
            return False
        if any(self.include.values()):
            return _matches_any(self.include, values)
        return True


def _matches_any(rules: dict[str, tuple[str, ...]], values: dict[str, str | None]) -> bool:
    for name, patterns in rules.items():
        value = values.get(name)
        if value is not None and any(fnmatchcase(value, p) for p in patterns):
            return True
    return False
