"""Pure: the three per-record steps of an OTLP logs export in one pass over its attributes.

:func:`ingest.validate.drop_invalid`, :meth:`ingest.redact.Redactor.apply` and the session
lookup of :func:`ingest.partition.split_by_session` each walk every attribute of every log
record; wrapping a protobuf attribute for Python is most of their cost, and together they were
~40% of an ingest worker's CPU under load. :func:`prepare_logs` reads each attribute once and
decides the same: a record refused (same reasons, same first message) is removed whole before
anything else sees it; the kept ones are redacted as ``Redactor.apply`` would (the resource's
attributes too); the session of each kept record comes from the same rule
(:mod:`tokentide.identity`). ``tests/unit/ingest/test_onepass.py`` checks it gives what the
three steps give, on the captured exports and on records each step would change.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ingest.partition import Located, Sessions
from ingest.redact import CONTENT_KEYS, Redactor
from ingest.validate import BOUNDED_ATTRIBUTES, Refusal, Refused, refused_summary
from tokentide import bounds, identity
from tokentide.bounds import OutOfRange
from tokentide.tenancy import Redaction
from tokentide.topics import Signal

_RECORD_KEYS = identity.RECORD_KEYS


def prepare_logs(
    request: Any, tenant: str, received_ns: int, redactor: Redactor, mode: Redaction
) -> tuple[Refused, int, list[Located]]:
    """Drop refused records, redact the rest in place; (what was refused, attributes redacted,
    (resource, scope, session) of every kept record in order)."""
    latest = received_ns + bounds.MAX_FUTURE_NS
    redact = mode is not Redaction.OFF
    reasons: Counter[str] = Counter()
    first = ""
    redacted = 0
    located: list[Located] = []
    for r, resource_item in enumerate(request.resource_logs):
        if redact:
            redacted += redactor.redact_attributes(resource_item.resource.attributes, mode)
        sessions = Sessions(tenant, resource_item.resource)
        for s, scope in enumerate(resource_item.scope_logs):
            records = scope.log_records
            kept: list[Any] | None = None  # set once a record of this scope is refused
            for n, record in enumerate(records):
                refusal, hits, own = _scan(record, received_ns, latest)
                if refusal is not None:
                    reasons[refusal[0]] += 1
                    first = first or refusal[1]
                    if kept is None:
                        kept = list(records[:n])
                    continue
                if kept is not None:
                    kept.append(record)
                if hits and redact:
                    redacted += redactor.redact_attributes(record.attributes, mode, hits)
                located.append((r, s, sessions.of_strings(own)))
            if kept is not None:
                del records[:]
                records.extend(kept)
    return refused_summary(Signal.LOGS, reasons, first), redacted, located


def _scan(record: Any, received_ns: int, latest: int) -> tuple[Refusal, list[int], dict[str, str]]:
    """One log record: why it is refused (as ``validate._log_refusal``), else the indices of
    its content attributes and its identity strings (as ``identity.strings``)."""
    trace_id, span_id = record.trace_id, record.span_id
    if (trace_id and len(trace_id) != 16) or (span_id and len(span_id) != 8):
        if len(trace_id) != 16 and trace_id:
            return ("bad_trace_id", f"trace_id must be 16 bytes, got {len(trace_id)}"), [], {}
        return ("bad_span_id", f"span_id must be 8 bytes, got {len(span_id)}"), [], {}
    time_ns = record.time_unix_nano or record.observed_time_unix_nano
    if time_ns > latest:
        try:
            bounds.event_time(time_ns, received_ns)
        except OutOfRange as refused:
            return (refused.reason, str(refused)), [], {}
    hits: list[int] = []
    own: dict[str, str] = {}
    for i, kv in enumerate(record.attributes):
        key = kv.key
        if key in BOUNDED_ATTRIBUTES:
            value = kv.value
            kind = value.WhichOneof("value")
            try:
                bounds.record_attribute(key, None if kind is None else getattr(value, kind))
            except OutOfRange as refused:
                return (refused.reason, str(refused)), [], {}
        elif key in CONTENT_KEYS:
            hits.append(i)
        elif key in _RECORD_KEYS and key not in own:
            value_string = kv.value.string_value
            if value_string:
                own[key] = value_string
    return None, hits, own
