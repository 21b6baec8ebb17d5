"""The exporters a configuration turns on: OTLP, Parquet, Redis Streams.

Each is an :class:`~lumen_agent.outputs.base.Output`, off by default, and
added to the agent (``run``) or to a replay the same way.
"""

from __future__ import annotations

from lumen_agent.config import Config
from lumen_agent.outputs.base import Output


def build_exporters(config: Config) -> list[Output]:
    exporters: list[Output] = []
    if config.export_parquet is not None:
        from lumen_agent.outputs.parquet import ParquetExport, ParquetExporter

        exporters.append(ParquetExport(ParquetExporter(config.db, config.export_parquet, host=config.hostname),
                                       interval=config.export_parquet_interval_s))
    if config.export_redis:
        from lumen_agent.outputs.redis_stream import RedisStreamExport

        exporters.append(RedisStreamExport(config.export_redis, stream=config.export_redis_stream,
                                           maxlen=config.export_redis_maxlen,
                                           per_tenant=config.export_redis_per_tenant))
    if config.export_otlp or _otlp_from_environment():
        from lumen_agent.outputs.otlp import OtlpExport

        exporters.append(OtlpExport(config.export_otlp, protocol=config.export_otlp_protocol,
                                    host=config.hostname, headers=config.export_otlp_headers or None))
    return exporters


def _otlp_from_environment() -> bool:
    import os

    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))
