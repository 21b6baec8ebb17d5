"""A tiny OTLP/HTTP receiver for tests: no Collector binary can be installed
here, so this stands in for one.  It decodes what arrives with the protobuf
classes of ``opentelemetry-proto``, the same ones a Collector uses."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)


def any_value(v) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.records: list[dict[str, Any]] = []  # one per log record: attributes + resource + fields
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path == "/v1/logs":
                    request = ExportLogsServiceRequest.FromString(body)
                    receiver._take_logs(request)
                    reply = ExportLogsServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics":
                    receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                    reply = ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _take_logs(self, request: ExportLogsServiceRequest) -> None:
        for resource_logs in request.resource_logs:
            resource = {a.key: any_value(a.value) for a in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    self.records.append({
                        "event_name": record.event_name,
                        "time_unix_nano": record.time_unix_nano,
                        "body": any_value(record.body),
                        "attributes": {a.key: any_value(a.value) for a in record.attributes},
                        "resource": resource,
                    })

    def metric_names(self) -> set[str]:
        return {m.name for req in self.metrics for rm in req.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
