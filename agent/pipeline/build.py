"""One way to build the pipeline, for every entry point (run, exec, proxy, replay).

The price table, the key-hash salt and the options all come from the
configuration here, so the agent, the hook, the proxy and replay cannot
drift apart in how they price, hash or attribute a call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lumen_agent import paths
from lumen_agent.pipeline.attribution import Attribution
from lumen_agent.pipeline.call import Call
from lumen_agent.pipeline.core import Pipeline, PipelineOptions
from lumen_agent.pipeline.keyhash import load_or_create_salt
from lumen_agent.pricing.table import PriceTable

if TYPE_CHECKING:
    from lumen_agent.config import Config


def build(config: Config, *, capture: str, on_call: Callable[[Call], None],
          attribution: Attribution | None = None,
          on_ignore: Callable[[int, int], None] | None = None,
          capture_of_conn: Callable[[int], str | None] | None = None) -> Pipeline:
    """A pipeline that prices with ``config``'s table and hands each Call to ``on_call``.

    ``capture`` names the source on every row (``ebpf``, ``hook``, ``proxy``,
    ``replay``, ...); ``attribution`` says who made a call (a live /proc reader
    by default, or what a recording remembered); ``capture_of_conn`` names the
    source per connection when one agent has two (eBPF and the plain-HTTP sniffer).
    """
    return Pipeline(
        PriceTable.load(config.price_overrides),
        on_call,
        salt=load_or_create_salt(paths.state_dir()),
        options=PipelineOptions(
            capture=capture,
            capture_content=config.capture_content,
            default_tenant=config.default_tenant,
            default_feature=config.default_feature,
            hostname=config.hostname,
        ),
        attribution=attribution,
        on_ignore=on_ignore,
        capture_of_conn=capture_of_conn,
    )
