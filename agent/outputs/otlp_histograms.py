"""Histogram values recorded a batch at a time: the SDK's per-value work once per series.

Why: ``Histogram.record`` in the OpenTelemetry SDK cleans, copies and
hashes the attributes of every value it is given (~15 us a value here, and
three values per call made the metrics half the OTLP exporter's CPU); the
aggregation itself (count, sum, min, max, a bucket) is ~2 us.  The exporter
has its values a batch at a time, grouped by series, so that attribute work
is needed once per series and batch: the first value goes through
``record`` (which also creates the series, or sends it to the SDK's
overflow series past its cardinality limit), and the others go straight to
the aggregation(s) ``record`` put it in, in the same order, so every count,
sum, min, max and bucket is what ``record`` would have made.

The aggregations are found in the SDK's private storage.  Whatever is not
where this expects it (another SDK version, a view that drops attributes,
delta temporality, an exemplar filter that could sample) sends every value
through ``record``; ``fast`` says which path is taken, and the exporter's
tests check both that the installed SDK takes the fast one and the exact
values the collector receives.
"""

from __future__ import annotations

import logging
import math
from time import time_ns
from typing import Any

from opentelemetry.context import Context

try:  # the SDK's internals this relies on; without them, the public path
    from opentelemetry.sdk.metrics._internal._view_instrument_match import _hash_attributes
    from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOffExemplarFilter, TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
except ImportError:  # pragma: no cover - depends on the installed SDK
    _hash_attributes = None


log = logging.getLogger(__name__)


class BatchedHistograms:
    """Records a series' values of one batch into the SDK's histograms."""

    def __init__(self, meters: Any, reader: Any) -> None:
        self._storage = _reader_storage(meters, reader)
        self.fast = self._storage is not None
        # No span is ever current in the exporter: the SDK's default filter samples no exemplar.
        self._context = Context()

    def record(self, histogram: Any, values: list[float], attributes: dict[str, Any]) -> None:
        """``histogram.record(v, attributes)`` for each of ``values``, in order."""
        first, rest = values[0], values[1:]
        histogram.record(first, attributes)
        aggregations = self._aggregations(histogram, attributes) if rest and self.fast else None
        if aggregations is None:
            for value in rest:
                histogram.record(value, attributes)
            return
        now = time_ns()
        for i, value in enumerate(rest):
            if value < 0 or not math.isfinite(value):  # record() logs these and leaves them out
                histogram.record(value, attributes)
                continue
            try:
                measurement = Measurement(value, now, histogram, self._context)
                for aggregation in aggregations:
                    aggregation.aggregate(measurement, False)
            except (TypeError, AttributeError) as exc:  # an SDK whose internals moved: the public path from here on
                log.warning("OTLP histograms: recording value by value from now on (%s)", exc)
                self.fast = False
                for later in rest[i:]:
                    histogram.record(later, attributes)
                return

    def _aggregations(self, histogram: Any, attributes: dict[str, Any]) -> list | None:
        """The aggregations ``record(v, attributes)`` just put a value in, or None."""
        try:
            matches = self._storage._instrument_view_instrument_matches[histogram]
            key = _hash_attributes(attributes)
            if any(m._reset_on_collect or m._view._attribute_keys is not None for m in matches):
                return None  # delta (collect swaps them out) or a view that filters attributes
            return [m._attributes_aggregation[key] for m in matches]
        except (AttributeError, KeyError, TypeError):  # not (or no longer) where expected: the public path
            return None


def _reader_storage(meters: Any, reader: Any) -> Any | None:
    """The SDK's storage of ``reader``'s series, when this SDK is laid out as expected."""
    if _hash_attributes is None:
        return None
    try:
        consumer = meters._measurement_consumer
        exemplar_filter = consumer._sdk_config.exemplar_filter
        storage = consumer._reader_storages[reader]
        storage._instrument_view_instrument_matches  # noqa: B018 - checked here, used per batch
    except (AttributeError, KeyError, TypeError):
        return None
    if not isinstance(exemplar_filter, (AlwaysOffExemplarFilter, TraceBasedExemplarFilter)):
        return None  # exemplars could be sampled from these values: they must go through record()
    return storage
