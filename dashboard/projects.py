"""The project a session belongs to, as SQL over ``sessions s`` (pure: builds text, runs nothing).

A session's project is, in order: what the Claude Code hook reported for it (``session_context``,
migration 0017: the git repository, else the working directory), the session's ``project``
resource attribute, its ``service.namespace`` resource attribute; NULL when none is known.
Every query that groups, filters or budgets by project uses these two fragments, so the API,
the usage grouping, budgets and recommendations agree on it.
"""

from __future__ import annotations

from typing import LiteralString

#: Joins each session ``s`` to its hook-reported context ``sc`` (at most one row per session).
PROJECT_JOIN: LiteralString = (
    "LEFT JOIN session_context sc ON sc.tenant_id = s.tenant_id AND sc.session_id = s.session_id"
)

#: The session's project (text, NULL when unknown) over ``sessions s`` joined with PROJECT_JOIN.
PROJECT_SQL: LiteralString = (
    "COALESCE(sc.project, s.attributes ->> 'project', s.attributes ->> 'service.namespace')"
)
