"""Every time the API answers with is RFC 3339 in UTC with milliseconds and ``Z``.

pydantic writes a UTC datetime as ``...:50Z`` when its microseconds are 0 and ``...:50.789000Z``
otherwise; clients parsing both shapes is what this avoids (issue 14). Use :data:`Timestamp`
for every datetime field of a response model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def rfc3339_ms(at: datetime) -> str:
    """``2026-11-24T01:51:10.893Z``: UTC, milliseconds (truncated), ``Z``; naive means UTC."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


Timestamp = Annotated[datetime, PlainSerializer(rfc3339_ms, return_type=str, when_used="json")]
