"""The fallback normaliser: any OTLP client, read by the OpenTelemetry GenAI semantic conventions.

Every record of a client no specific normaliser claims is kept (as an :class:`Event` or
:class:`Point`, agent = the resource's ``service.name``). Where the client follows the GenAI
semantic conventions (attribute names checked against open-telemetry/semantic-conventions
``docs/gen-ai`` and the JS ``semantic-conventions`` incubating constants), it is also accounted:

- Usage: a log record carrying ``gen_ai.usage.input_tokens`` or ``gen_ai.usage.output_tokens``
  (typically the ``gen_ai.client.inference.operation.details`` event) is an
  :attr:`EventKind.USAGE` event. The conventions define ``input_tokens`` as *all* input tokens,
  cached ones included, and ``gen_ai.usage.cache_read.input_tokens`` /
  ``gen_ai.usage.cache_creation.input_tokens`` as parts of it; ``output_tokens`` includes
  ``gen_ai.usage.reasoning.output_tokens``. Canonical tokens are therefore
  ``input = input_tokens - cache_read - cache_creation`` (never below 0), ``output =
  output_tokens``, ``reasoning = reasoning.output_tokens`` (a breakdown). The pre-1.27 names
  ``gen_ai.usage.prompt_tokens`` / ``completion_tokens`` and the short-lived
  ``gen_ai.usage.cache_read_input_tokens`` / ``cache_creation_input_tokens`` are read as
  fallbacks.
- Errors: a ``gen_ai.client.inference.operation.details`` event without usage but with
  ``error.type`` is an :attr:`EventKind.API_ERROR`.
- Model: ``gen_ai.response.model``, else ``gen_ai.request.model``.
- Cost: none is sent, so it comes from the price table (``cost_source="price_table"``); an
  unknown model leaves ``cost_nanos`` and ``cost_source`` None.
- Metric ``gen_ai.client.token.usage`` (histogram; a point's ``value`` is the histogram *sum*,
  its count is kept as ``histogram.count``): ``gen_ai.token.type`` ``input`` ->
  ``tokens.input``, ``output`` -> ``tokens.output``. By the conventions ``input`` includes
  cached tokens, and this metric has no cache breakdown, so for a metrics-only reader cached
  input is indistinguishable from (and counted as) uncached input: the sum of all input
  tokens stays exact, the uncached/cached split is not available from this metric.

Event ids are content hashes of (session, the record's deterministic protobuf bytes): a
re-sent export gets the same ids and is deduplicated downstream.

Subclasses (per-agent normalisers) reuse :meth:`GenericNormaliser.base_event`, the
``metric_measures`` table, :meth:`GenericNormaliser.point_model`, :func:`price_from_table` and
:func:`derived_points`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from streams.normalise.base import Origin
from streams.otlp import any_value, as_str, attributes, series_id, stable_id
from streams.pricing import cost_nanos
from tokentide.bounds import token_count
from tokentide.records import Event, EventKind, Measure, Point, Tokens, replace

#: What a metric's point counts, from the point's attributes (None: nothing canonical).
MeasureOf = Callable[[dict[str, Any]], Measure | None]

#: The GenAI semantic conventions' per-operation event.
OPERATION_DETAILS = "gen_ai.client.inference.operation.details"
#: The GenAI semantic conventions' token histogram.
CLIENT_USAGE_METRIC = "gen_ai.client.token.usage"

#: Usage attributes, current name first, older names after it.
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ_TOKENS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_CREATION_TOKENS = (
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING_TOKENS = ("gen_ai.usage.reasoning.output_tokens",)

#: Attribute in which a histogram point keeps its count (its value is the sum).
HISTOGRAM_COUNT = "histogram.count"
#: Key of the attribute that marks a point tokentide computed from others (see derived_points).
DERIVED = "tokentide.derived"


def first_int(attrs: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    """The first of ``keys`` that holds a token count (ints, integral floats or decimal
    strings); a count out of range raises :class:`tokentide.bounds.OutOfRange`."""
    for key in keys:
        value = token_count(attrs.get(key), key)
        if value is not None:
            return value
    return None


def semconv_model(attrs: Mapping[str, Any]) -> str | None:
    """The model by the GenAI conventions: the response's, else the request's."""
    return as_str(attrs.get("gen_ai.response.model")) or as_str(attrs.get("gen_ai.request.model")) or None


def semconv_tokens(attrs: Mapping[str, Any]) -> Tokens | None:
    """Canonical tokens of a record with GenAI usage attributes; None if it has none."""
    reported_input = first_int(attrs, INPUT_TOKENS)
    output = first_int(attrs, OUTPUT_TOKENS)
    if reported_input is None and output is None:
        return None
    cache_read = first_int(attrs, CACHE_READ_TOKENS) or 0
    cache_creation = first_int(attrs, CACHE_CREATION_TOKENS) or 0
    return Tokens(
        input=max((reported_input or 0) - cache_read - cache_creation, 0),
        output=output or 0,
        cache_read=cache_read,
        cache_creation=cache_creation,
        reasoning=first_int(attrs, REASONING_TOKENS) or 0,
    )


def price_from_table(event: Event) -> None:
    """Set ``cost_nanos`` of a usage event from the price table (the agent sent no cost).

    ``cost_source`` becomes ``"price_table"``; for a model the table does not know both stay
    None, so an unknown price is never mistaken for a zero cost.
    """
    if event.tokens is None:
        return
    event.cost_nanos = cost_nanos(event.model, event.tokens)
    event.cost_source = "price_table" if event.cost_nanos is not None else None


def _semconv_token_measure(attrs: dict[str, Any]) -> Measure | None:
    return SEMCONV_TOKEN_TYPES.get(str(attrs.get("gen_ai.token.type")))


#: ``gen_ai.token.type`` -> canonical token type (see the module docstring about cache).
SEMCONV_TOKEN_TYPES = {"input": Measure.TOKENS_INPUT, "output": Measure.TOKENS_OUTPUT}
SEMCONV_METRIC_MEASURES: Mapping[str, MeasureOf] = {CLIENT_USAGE_METRIC: _semconv_token_measure}


@dataclass(frozen=True, slots=True)
class Derivation:
    """A canonical quantity computed from sibling points of one metric.

    ``name`` is the derived point's type value, ``base`` the type whose point it is copied
    from, ``plus`` / ``minus`` the sibling types added to / subtracted from its value.
    """

    name: str
    base: str
    measure: Measure
    plus: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()

    @property
    def formula(self) -> str:
        return " ".join([self.base, *(f"+ {t}" for t in self.plus), *(f"- {t}" for t in self.minus)])


def derived_points(points: Sequence[Point], type_key: str, derivations: Sequence[Derivation]) -> list[Point]:
    """Extra points carrying canonical values the client reports only as a sum or difference.

    Points of one metric are grouped by their attributes other than ``type_key`` and
    ``histogram.count`` (the same series but for the token type; one export holds one point
    per series). For every group
    holding the ``base`` type, one point is derived: a copy of the base point (same times,
    temporality and histogram count) whose value is ``base + plus - minus``, with
    ``type_key`` set to ``derivation.name``, ``tokentide.derived`` set to the formula, its own
    ``series_id`` and the derivation's ``measure``. A missing sibling counts as 0: OpenTelemetry
    SDKs create a series on its first recording, and the agents record every type, zeros
    included, on each request. Differences and sums of cumulative series are cumulative, so
    temporality carries over unchanged.
    """
    groups: dict[tuple[tuple[str, str], ...], dict[str, Point]] = {}
    for point in points:
        kind = point.attributes.get(type_key)
        if not isinstance(kind, str) or DERIVED in point.attributes:
            continue
        rest = tuple(
            sorted((k, repr(v)) for k, v in point.attributes.items() if k not in (type_key, HISTOGRAM_COUNT))
        )
        groups.setdefault(rest, {})[kind] = point
    out = []
    for by_type in groups.values():
        for derivation in derivations:
            base = by_type.get(derivation.base)
            if base is None:
                continue
            value = (
                base.value
                + sum(by_type[t].value for t in derivation.plus if t in by_type)
                - sum(by_type[t].value for t in derivation.minus if t in by_type)
            )
            out.append(
                replace(
                    base,
                    value=value,
                    series_id=stable_id(base.series_id, DERIVED, derivation.name),
                    measure=derivation.measure,
                    attributes={
                        **base.attributes,
                        type_key: derivation.name,
                        DERIVED: derivation.formula,
                    },
                )
            )
    return out


class GenericNormaliser:
    """Matches every origin; the agent is the resource's ``service.name``."""

    agent = "unknown"
    #: Metric name -> what its points count. Per-agent subclasses replace the table.
    metric_measures: ClassVar[Mapping[str, MeasureOf]] = SEMCONV_METRIC_MEASURES

    def matches(self, origin: Origin) -> bool:
        return True

    def agent_of(self, origin: Origin) -> str:
        return origin.service_name or self.agent

    def base_event(self, origin: Origin, record: LogRecord) -> Event:
        """What every client's record shares: identity, name, time, session, attributes.

        Name: ``event.name`` attribute, else ``LogRecord.event_name``, else ``log``. Time:
        ``time_unix_nano``, else ``observed_time_unix_nano`` (Codex sends 0), else the
        receive time. A non-empty body is kept as attribute ``body``. ``kind`` is OTHER.
        """
        attrs = attributes(record.attributes)
        body = any_value(record.body)
        name = as_str(attrs.get("event.name")) or record.event_name or "log"
        time_ns = record.time_unix_nano or record.observed_time_unix_nano or origin.received_ns
        session_id = origin.session_of(attrs)
        if body is not None:
            attrs["body"] = body
        return Event(
            tenant=origin.tenant,
            session_id=session_id,
            # Content-addressed: a re-sent record gets the same id.
            event_id=stable_id(session_id, record.SerializeToString(deterministic=True)),
            agent=self.agent_of(origin),
            name=name,
            time_ns=time_ns,
            user_id=as_str(attrs.get("user.id")),
            attributes=attrs,
        )

    def event(self, origin: Origin, record: LogRecord) -> Event:
        """The record as an event, accounted by the GenAI conventions when it follows them."""
        event = self.base_event(origin, record)
        attrs = event.attributes
        event.model = semconv_model(attrs)
        event.tokens = semconv_tokens(attrs)
        if event.tokens is not None:
            event.kind = EventKind.USAGE
            price_from_table(event)
        elif event.name == OPERATION_DETAILS and attrs.get("error.type"):
            event.kind = EventKind.API_ERROR
        return event

    def long_context(self, origin: Origin, metric: Metric) -> bool:
        return False

    def point_model(self, attrs: Mapping[str, Any]) -> str | None:
        """The model a point is about (GenAI conventions' attributes here)."""
        return semconv_model(attrs)

    def points(self, origin: Origin, metric: Metric) -> list[Point]:
        """One point per data point; ``model`` and ``measure`` by this class's rules."""
        points = self.raw_points(origin, metric)
        measure_of = self.metric_measures.get(metric.name)
        for point in points:
            point.model = self.point_model(point.attributes)
            if measure_of is not None:
                point.measure = measure_of(point.attributes)
        return points

    def raw_points(self, origin: Origin, metric: Metric) -> list[Point]:
        """The data points as :class:`Point` records, without model or measure.

        Sums and gauges keep their value; histograms their sum (count in attribute
        ``histogram.count``); summaries are dropped (no agent sends them).
        """
        kind = metric.WhichOneof("data")
        # (data point, its attributes, value, extra attributes kept with the point)
        raw: list[tuple[Any, dict[str, Any], float, dict[str, Any]]]
        monotonic = kind == "sum" and metric.sum.is_monotonic
        if kind in ("sum", "gauge"):
            data = getattr(metric, kind)
            temporality = data.aggregation_temporality if kind == "sum" else 0
            raw = [
                (
                    p,
                    attributes(p.attributes),
                    p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int),
                    {},
                )
                for p in data.data_points
            ]
        elif kind in ("histogram", "exponential_histogram"):
            data = getattr(metric, kind)
            temporality = data.aggregation_temporality
            raw = [(p, attributes(p.attributes), p.sum, {HISTOGRAM_COUNT: p.count}) for p in data.data_points]
        else:
            return []  # summaries are not produced by any agent we know
        agent = self.agent_of(origin)
        service = origin.service_name
        return [
            Point(
                tenant=origin.tenant,
                session_id=origin.session_of(attrs),
                agent=agent,
                name=metric.name,
                series_id=series_id(service, metric.name, attrs),
                time_ns=point.time_unix_nano or origin.received_ns,
                start_time_ns=point.start_time_unix_nano,
                value=value,
                temporality=temporality,
                monotonic=monotonic,
                unit=metric.unit,
                attributes={**attrs, **extra} if extra else attrs,
            )
            for point, attrs, value, extra in raw
        ]
