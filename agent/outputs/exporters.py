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
    # OTLP and Redis deliver from one exporter process of their own, so their
    # per-call Python work does not share the capture process's GIL
    # (export_process.py says why and how).
    sinks: dict[str, dict] = {}
    if config.export_redis:
        sinks["redis"] = {"url": config.export_redis, "stream": config.export_redis_stream,
                          "maxlen": config.export_redis_maxlen, "per_tenant": config.export_redis_per_tenant}
    if config.export_otlp or _otlp_from_environment():
        if config.export_otlp_protocol == "grpc":
            _check_grpc_exporter()
        sinks["otlp"] = {"endpoint": config.export_otlp, "protocol": config.export_otlp_protocol,
                         "host": config.hostname, "headers": config.export_otlp_headers or None}
    if sinks:
        from lumen_agent.outputs import otlp, redis_stream
        from lumen_agent.outputs.export_process import ExportProcess, ForwardedExport

        bounds = {"otlp": otlp.MAX_QUEUED, "redis": redis_stream.MAX_QUEUED}
        process = ExportProcess(sinks, max_queued={name: bounds[name] for name in sinks})
        exporters += [ForwardedExport(name, process) for name in sinks]
    return exporters


def _otlp_from_environment() -> bool:
    import os

    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"))


def _check_grpc_exporter() -> None:
    """Say it here, not in the exporter process's log, when gRPC cannot work."""
    import importlib.util

    from lumen_agent.errors import LumenError

    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is None:
        raise LumenError("OTLP over gRPC needs the gRPC exporter package",
                         "pip install 'lumen-agent[otlp-grpc]', or use protocol = \"http/protobuf\"")
