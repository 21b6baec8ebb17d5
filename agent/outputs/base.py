"""What every output of the agent is: something that receives each finished call.

The store, the live feed, the metrics and, later, alerts and exporters all
register on the agent with ``Agent.add_output`` and are driven the same way,
on the run loop's thread:

* ``on_call(call)`` for every call, in the order calls finish;
* ``on_tick(now)`` about once a second (``now`` is ``time.monotonic()``);
* ``close()`` once at stop, after the last call;
* ``stats()`` for the agent's status (``status``, ``top``, metrics).

An output must never block capture: work that can wait on the network or a
disk goes to its own bounded queue, and what it drops it counts in ``stats``.
"""

from __future__ import annotations

from typing import Any

from lumen_agent.pipeline.call import Call


class Output:
    """Base class with do-nothing hooks; an output overrides what it needs."""

    name = "output"

    def on_call(self, call: Call) -> None:
        pass

    def on_tick(self, now: float) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}
