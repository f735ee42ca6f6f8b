"""Recommendations computed from a window's data, each with the money it would have saved (pure).

``GET /api/v1/recommendations`` (dashboard/insights.py) runs the queries below over the
caller's tenant and the last ``window_days`` days, then each rule here turns their rows into
:class:`Recommendation` values. Money is integer nano-USD priced by the price table
(:mod:`streams.pricing` through :class:`dashboard.compare.Catalogue`); a model the table does
not know saves nothing (never a guess). ``rates(p)`` below is the model's rate set for a
prompt of ``p`` tokens (its long-context tier when ``p`` is above the tier's threshold).

The rules, their thresholds and savings (README "Recommendations" says the same):

``cache`` (scope user): a user whose cache-read ratio ``cache_read / (input + cache_read)``
    over the window is below the rest of their team's (same team attribute, every other user
    together) by more than :data:`CACHE_GAP` (20 percentage points), with at least
    :data:`CACHE_MIN_PROMPT` (100 000) ``input + cache_read`` tokens. Per model ``m`` the user
    used: ``shifted_m = max(0, floor(R * (input_m + cache_read_m)) - cache_read_m)`` tokens
    would have been read from cache at the rest of the team's ratio ``R``;
    savings = ``sum_m shifted_m * (rates_m(0).input - rates_m(0).cache_read)``.
``compaction`` (scope session): a session with at least :data:`COMPACTION_MIN` (3)
    compactions in the window. Each compaction re-reads the context it summarises and writes
    the summary to the cache anew; the ones after the first are the avoidable ones:
    savings = ``sum over compactions k >= 2 (in time order) of pre_k * rates(pre_k).cache_read
    + post_k * rates(pre_k).cache_creation`` at the session's context model, where ``pre_k``
    and ``post_k`` are the compaction's ``pre_tokens`` and ``post_tokens`` (0 when not said).
``smaller_model`` (scope project): in one project, for requests of the same pattern (the
    same ``query_source`` and subagent ``agent.name``) on a model ``L``, a model ``S`` of the
    same provider with lower input *and* output rates that served at least
    :data:`SMALL_MIN_REQUESTS` (5) requests of that pattern in that project and had no
    ``api_error`` in that project in the window. The requests of ``L`` no larger than what
    ``S`` served there (prompt <= S's largest prompt and output <= S's largest output) could
    have gone to ``S``: savings = ``sum over them of cost_L(tokens) - cost_S(tokens)`` (the
    price table's full, tiered cost of each request's tokens). Of several such ``S``, the one
    saving most; none when no candidate saves anything on those requests (its cache or
    long-context rates may be higher).
``retry_storm`` (scope session): at least :data:`STORM_MIN_ERRORS` (3) ``api_error``
    events of a session each at most :data:`STORM_GAP_S` (300 s) after the previous one.
    savings = the cost of those error events (when the provider billed them, else 0) plus the
    cost of the session's requests from the storm's first error to :data:`STORM_GAP_S` after
    its last (the requests retried through the storm).
``idle_context`` (scope session): a main-conversation request sent more than
    :data:`IDLE_MIN_S` (1800 s) after the session's previous main-conversation request, with
    a prompt above :data:`IDLE_MIN_CONTEXT` (100 000 tokens): its prompt cache had expired, so the context
    was written again. savings = ``sum over such resumptions of cost(cache writes) -
    cache_creation * rates(prompt).cache_read``: what writing the context cost over reading
    it from a warm cache (``/compact`` or ``/clear`` before a long pause avoids most of it).

Recommendations are sorted by savings, largest first (then kind, then subject).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any, LiteralString

from dashboard.compare import (
    NANOS_PER_USD,
    ONE_HOUR_SQL,
    PROMPT_SQL,
    Catalogue,
    PricedModel,
    to_nanos,
    tokens_of,
)
from dashboard.projects import PROJECT_JOIN, PROJECT_SQL
from tokentide.records import Tokens

DEFAULT_WINDOW_DAYS = 30

CACHE_GAP = Fraction(20, 100)
CACHE_MIN_PROMPT = 100_000
COMPACTION_MIN = 3
SMALL_MIN_REQUESTS = 5
STORM_MIN_ERRORS = 3
STORM_GAP_S = 300
IDLE_MIN_S = 1800
IDLE_MIN_CONTEXT = 100_000


class Kind(enum.StrEnum):
    CACHE = "cache"
    COMPACTION = "compaction"
    SMALLER_MODEL = "smaller_model"
    RETRY_STORM = "retry_storm"
    IDLE_CONTEXT = "idle_context"


class Scope(enum.StrEnum):
    USER = "user"
    SESSION = "session"
    PROJECT = "project"


Evidence = dict[str, int | str | float | None]


@dataclass(frozen=True, slots=True)
class Recommendation:
    kind: Kind
    scope: Scope
    #: What the recommendation is about: ``team`` and ``user``, ``session_id``, ``project``...
    subject: dict[str, str | None]
    #: The numbers it rests on (tokens, counts, ratios, models).
    evidence: Evidence
    savings_nanos: int
    message: str

    @property
    def savings_usd(self) -> float:
        return self.savings_nanos / NANOS_PER_USD


def ordered(recommendations: Iterable[Recommendation]) -> list[Recommendation]:
    """Largest savings first, then by kind and subject (a stable, total order)."""
    return sorted(
        recommendations,
        key=lambda r: (-r.savings_nanos, r.kind, sorted((k, v or "") for k, v in r.subject.items())),
    )


def _usd(nanos: int) -> str:
    return f"${nanos / NANOS_PER_USD:,.2f}"


# --- cache ---------------------------------------------------------------------------------

#: Input and cache-read tokens per team, user and model (usage events in the window).
CACHE_SQL: LiteralString = """
    SELECT s.attributes ->> %(team_key)s AS team, coalesce(e.user_id, s.user_id) AS user_id, e.model,
           sum(coalesce(e.input_tokens, 0))::bigint AS input_tokens,
           sum(coalesce(e.cache_read_tokens, 0))::bigint AS cache_read_tokens
      FROM events e
      JOIN sessions s ON s.tenant_id = e.tenant_id AND s.session_id = e.session_id
     WHERE e.tenant_id = %(tenant)s AND e.kind = 'usage' AND e.ts >= %(from)s AND e.ts < %(to)s
     GROUP BY 1, 2, 3
"""


def cache_rule(rows: Iterable[Mapping[str, Any]], catalogue: Catalogue) -> list[Recommendation]:
    """The ``cache`` rule (module docstring) over :data:`CACHE_SQL` rows."""
    by_user: dict[tuple[str | None, str | None], dict[str | None, tuple[int, int]]] = defaultdict(dict)
    for row in rows:
        by_user[(row["team"], row["user_id"])][row["model"]] = (row["input_tokens"], row["cache_read_tokens"])
    totals = {
        key: (sum(i for i, _ in models.values()), sum(c for _, c in models.values()))
        for key, models in by_user.items()
    }
    teams: dict[str | None, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for (team, _), (input_, cache_read) in totals.items():
        teams[team] = (teams[team][0] + input_, teams[team][1] + cache_read)
    out = []
    for (team, user), (input_, cache_read) in totals.items():
        prompt = input_ + cache_read
        if user is None or prompt < CACHE_MIN_PROMPT:
            continue
        rest_input, rest_cache = teams[team][0] - input_, teams[team][1] - cache_read
        if rest_input + rest_cache == 0:
            continue
        ratio = Fraction(cache_read, prompt)
        rest = Fraction(rest_cache, rest_input + rest_cache)
        if rest - ratio <= CACHE_GAP:
            continue
        savings = shifted_total = 0
        unpriced: list[str] = []
        for model, (i, c) in sorted(by_user[(team, user)].items(), key=lambda kv: kv[0] or ""):
            shifted = max(0, int(rest * (i + c)) - c)
            priced = catalogue.lookup(model)
            if priced is None:
                unpriced.append(model or "(none)")
                continue
            rates = priced.price.rates_for(0)
            shifted_total += shifted
            savings += shifted * (rates.input - rates.cache_read)
        out.append(
            Recommendation(
                Kind.CACHE,
                Scope.USER,
                {"team": team, "user": user},
                {
                    "input_tokens": input_,
                    "cache_read_tokens": cache_read,
                    "cache_ratio": float(ratio),
                    "team_cache_ratio": float(rest),
                    "tokens_to_cache": shifted_total,
                    "unpriced_models": ", ".join(unpriced) or None,
                },
                savings,
                f"{user} reads {float(ratio):.0%} of their prompt tokens from cache, the rest of "
                f"team {team or '(none)'} {float(rest):.0%}: at the team's ratio "
                f"{shifted_total:,} more tokens would have been cache reads, {_usd(savings)} less.",
            )
        )
    return out


# --- compaction ----------------------------------------------------------------------------

_PRE: LiteralString = (
    "CASE WHEN e.attributes ->> 'pre_tokens' ~ '^[0-9]{1,18}$'"
    " THEN (e.attributes ->> 'pre_tokens')::bigint END"
)
_POST: LiteralString = (
    "CASE WHEN coalesce(e.attributes ->> 'post_tokens', e.attributes ->> 'tokens_after') ~ '^[0-9]{1,18}$'"
    " THEN coalesce(e.attributes ->> 'post_tokens', e.attributes ->> 'tokens_after')::bigint END"
)
#: The compactions in the window, per session in time order, with the session's context model.
COMPACTION_SQL: LiteralString = (
    "SELECT e.session_id, e.ts, "  # noqa: S608 (LiteralString parts; values are parameters)
    + _PRE
    + " AS pre_tokens, "
    + _POST
    + """ AS post_tokens,
           coalesce(s.context_model, s.models[1]) AS model, s.user_id, """
    + PROJECT_SQL
    + """ AS project
      FROM events e
      JOIN sessions s ON s.tenant_id = e.tenant_id AND s.session_id = e.session_id
      """
    + PROJECT_JOIN
    + """
     WHERE e.tenant_id = %(tenant)s AND e.kind = 'compaction' AND e.ts >= %(from)s AND e.ts < %(to)s
     ORDER BY e.session_id, e.ts, e.event_id"""
)


def compaction_rule(rows: Iterable[Mapping[str, Any]], catalogue: Catalogue) -> list[Recommendation]:
    """The ``compaction`` rule (module docstring) over :data:`COMPACTION_SQL` rows."""
    sessions: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        sessions[row["session_id"]].append(row)
    out = []
    for session_id, unordered in sessions.items():
        if len(unordered) < COMPACTION_MIN:
            continue
        compactions = sorted(unordered, key=lambda r: r["ts"])
        first = compactions[0]
        priced = catalogue.lookup(first["model"])
        savings = 0
        extra = compactions[1:]
        if priced is not None:
            for c in extra:
                pre, post = c["pre_tokens"] or 0, c["post_tokens"] or 0
                rates = priced.price.rates_for(pre)
                savings += pre * rates.cache_read + post * rates.cache_creation
        out.append(
            Recommendation(
                Kind.COMPACTION,
                Scope.SESSION,
                {"session_id": session_id, "user": first["user_id"], "project": first["project"]},
                {
                    "compactions": len(compactions),
                    "model": first["model"],
                    "pre_tokens": sum(c["pre_tokens"] or 0 for c in extra),
                    "post_tokens": sum(c["post_tokens"] or 0 for c in extra),
                    "priced": priced is not None,
                },
                savings,
                f"Session {session_id} compacted {len(compactions)} times: the "
                f"{len(extra)} after the first re-read and re-cached its context for "
                f"{_usd(savings)}. Start a fresh session (or /clear) for a new task.",
            )
        )
    return out


# --- smaller model -------------------------------------------------------------------------

#: The usage events of the window with a project and a model, as ``u`` (each with its pattern,
#: prompt, tier bucket over ``%(thresholds)s`` and tokens).
_PROJECT_REQUESTS: LiteralString = (
    "SELECT "  # noqa: S608 (LiteralString parts; values are parameters)
    + PROJECT_SQL
    + """ AS project, coalesce(e.query_source, '') AS query_source,
               coalesce(e.attributes ->> 'agent.name', '') AS agent_name, e.model, """
    + PROMPT_SQL
    + " AS prompt, (SELECT count(*) FROM unnest(%(thresholds)s::bigint[]) t WHERE "
    + PROMPT_SQL
    + """ > t)::int AS bucket,
               coalesce(e.input_tokens, 0) AS input_tokens, coalesce(e.output_tokens, 0) AS output_tokens,
               coalesce(e.cache_read_tokens, 0) AS cache_read_tokens,
               coalesce(e.cache_creation_tokens, 0) AS cache_creation_tokens,
               """
    + ONE_HOUR_SQL
    + """ AS cache_creation_1h_tokens, coalesce(e.reasoning_tokens, 0) AS reasoning_tokens
          FROM events e
          JOIN sessions s ON s.tenant_id = e.tenant_id AND s.session_id = e.session_id
          """
    + PROJECT_JOIN
    + """
         WHERE e.tenant_id = %(tenant)s AND e.kind = 'usage' AND e.ts >= %(from)s AND e.ts < %(to)s
           AND e.model IS NOT NULL AND """
    + PROJECT_SQL
    + " IS NOT NULL"
)
#: Per project, pattern (query source, subagent) and model: requests, largest prompt and output.
PATTERNS_SQL: LiteralString = (
    "SELECT u.project, u.query_source, u.agent_name, u.model, count(*)::bigint AS requests,"  # noqa: S608
    " max(u.prompt)::bigint AS max_prompt, max(u.output_tokens)::bigint AS max_output FROM ("
    + _PROJECT_REQUESTS
    + ") u GROUP BY 1, 2, 3, 4"
)
#: The requests each candidate could move (``%(c_*)s``: one array element per candidate and
#: model id of its larger model), summed per candidate and tier bucket.
MOVABLE_SQL: LiteralString = (
    """
    SELECT c.idx, u.bucket, count(*)::bigint AS requests,
           sum(u.input_tokens)::bigint AS input_tokens, sum(u.output_tokens)::bigint AS output_tokens,
           sum(u.cache_read_tokens)::bigint AS cache_read_tokens,
           sum(u.cache_creation_tokens)::bigint AS cache_creation_tokens,
           sum(u.cache_creation_1h_tokens)::bigint AS cache_creation_1h_tokens,
           sum(u.reasoning_tokens)::bigint AS reasoning_tokens
      FROM unnest(%(c_idx)s::int[], %(c_project)s::text[], %(c_source)s::text[], %(c_agent)s::text[],
                  %(c_model)s::text[], %(c_prompt)s::bigint[], %(c_output)s::bigint[])
           AS c(idx, project, query_source, agent_name, model, max_prompt, max_output)
      JOIN ("""  # noqa: S608 (LiteralString parts; values are parameters)
    + _PROJECT_REQUESTS
    + """) u ON u.project = c.project AND u.query_source = c.query_source
              AND u.agent_name = c.agent_name AND u.model = c.model
              AND u.prompt <= c.max_prompt AND u.output_tokens <= c.max_output
     GROUP BY 1, 2"""
)
#: API errors in the window per project and model.
PROJECT_ERRORS_SQL: LiteralString = (
    "SELECT "  # noqa: S608 (LiteralString parts; values are parameters)
    + PROJECT_SQL
    + """ AS project, e.model, count(*)::bigint AS errors
      FROM events e
      JOIN sessions s ON s.tenant_id = e.tenant_id AND s.session_id = e.session_id
      """
    + PROJECT_JOIN
    + """
     WHERE e.tenant_id = %(tenant)s AND e.kind = 'api_error' AND e.ts >= %(from)s AND e.ts < %(to)s
     GROUP BY 1, 2"""
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A larger model's requests of one project and pattern that a smaller model could serve."""

    project: str
    query_source: str
    agent_name: str
    large: PricedModel
    #: The model ids the requests name that price as ``large`` (snapshots, variants).
    large_ids: tuple[str, ...]
    large_requests: int
    small: PricedModel
    small_requests: int
    max_prompt: int
    max_output: int


def smaller_model_candidates(
    patterns: Iterable[Mapping[str, Any]], errors: Iterable[Mapping[str, Any]], catalogue: Catalogue
) -> list[Candidate]:
    """Every (larger model, smaller model) pair of a project and pattern that the ``smaller_model``
    rule allows (module docstring), from :data:`PATTERNS_SQL` and :data:`PROJECT_ERRORS_SQL` rows."""
    erring = set()
    for r in errors:
        priced = catalogue.lookup(r["model"])
        if r["errors"] and priced is not None:
            erring.add((r["project"], priced.name))
    # (project, source, agent) -> priced name -> [model, ids, requests, max prompt, max output]
    by_pattern: dict[tuple[str, str, str], dict[str, tuple[PricedModel, list[str], int, int, int]]]
    by_pattern = defaultdict(dict)
    for row in patterns:
        priced = catalogue.lookup(row["model"])
        if priced is None:  # an unknown price can neither be saved on nor moved to
            continue
        models = by_pattern[(row["project"], row["query_source"], row["agent_name"])]
        _, ids, n, prompt, output = models.get(priced.name, (priced, [], 0, 0, 0))
        models[priced.name] = (
            priced,
            [*ids, row["model"]],
            n + row["requests"],
            max(prompt, row["max_prompt"]),
            max(output, row["max_output"]),
        )
    out = []
    for (project, source, agent_name), models in sorted(by_pattern.items()):
        for large, large_ids, large_n, _, _ in models.values():
            for small, _, small_n, max_prompt, max_output in models.values():
                if (
                    small.name != large.name
                    and small.provider is not None
                    and small.provider == large.provider
                    and _cheaper(small.price.base, large.price.base)
                    and small_n >= SMALL_MIN_REQUESTS
                    and (project, small.name) not in erring
                ):
                    out.append(
                        Candidate(
                            project,
                            source,
                            agent_name,
                            large,
                            tuple(sorted(large_ids)),
                            large_n,
                            small,
                            small_n,
                            max_prompt,
                            max_output,
                        )
                    )
    return out


def movable_params(candidates: Sequence[Candidate]) -> dict[str, list[Any]]:
    """:data:`MOVABLE_SQL`'s candidate arrays: one element per candidate and larger-model id."""
    rows = [(i, c, model) for i, c in enumerate(candidates) for model in c.large_ids]
    return {
        "c_idx": [i for i, _, _ in rows],
        "c_project": [c.project for _, c, _ in rows],
        "c_source": [c.query_source for _, c, _ in rows],
        "c_agent": [c.agent_name for _, c, _ in rows],
        "c_model": [m for _, _, m in rows],
        "c_prompt": [c.max_prompt for _, c, _ in rows],
        "c_output": [c.max_output for _, c, _ in rows],
    }


def smaller_model_rule(
    candidates: Sequence[Candidate], movable: Iterable[Mapping[str, Any]], catalogue: Catalogue
) -> list[Recommendation]:
    """The ``smaller_model`` rule (module docstring): of each larger model's candidates, the one
    saving most, over :data:`MOVABLE_SQL` rows for ``candidates``."""
    sums: dict[int, tuple[int, int]] = defaultdict(lambda: (0, 0))  # idx -> (requests, savings)
    for row in movable:
        c = candidates[row["idx"]]
        rates = catalogue.context_of(row["bucket"])
        tokens = tokens_of(row)
        saved = c.large.price.rates_for(rates).cost_nanos(tokens) - c.small.price.rates_for(rates).cost_nanos(
            tokens
        )
        n, total = sums[row["idx"]]
        sums[row["idx"]] = (n + row["requests"], total + saved)
    best: dict[tuple[str, str, str, str], tuple[int, str, int, Candidate]] = {}
    for idx, (moved, savings) in sums.items():
        if savings <= 0:  # cheaper base rates, yet no cheaper on these requests (cache or tier rates)
            continue
        c = candidates[idx]
        key = (c.project, c.query_source, c.agent_name, c.large.name)
        if key not in best or (savings, c.small.name) > best[key][:2]:
            best[key] = (savings, c.small.name, moved, c)
    out = []
    for savings, _, moved, c in best.values():
        source, agent_name = c.query_source, c.agent_name
        out.append(
            Recommendation(
                Kind.SMALLER_MODEL,
                Scope.PROJECT,
                {"project": c.project, "query_source": source or None, "agent_name": agent_name or None},
                {
                    "model": c.large.name,
                    "smaller_model": c.small.name,
                    "requests": c.large_requests,
                    "requests_movable": moved,
                    "smaller_model_requests": c.small_requests,
                    "smaller_model_max_prompt": c.max_prompt,
                },
                savings,
                f"In {c.project}, {moved} of {c.large_requests} {source or 'requests'}"
                f"{' (' + agent_name + ')' if agent_name else ''} requests on {c.large.name} were "
                f"no larger than what {c.small.name} served there without errors: "
                f"on {c.small.name} they would have cost {_usd(savings)} less.",
            )
        )
    return out


def _cheaper(small: Any, large: Any) -> bool:
    return bool(small.input < large.input and small.output < large.output)


# --- retry storms --------------------------------------------------------------------------

#: The API errors and requests in the window of the sessions with at least
#: ``%(storm_min)s`` API errors in it, per session in time order.
STORM_SQL: LiteralString = (
    """
    SELECT e.session_id, e.ts, e.kind, e.cost_usd, e.model,
           coalesce(e.attributes ->> 'status_code', e.attributes ->> 'http.response.status_code')
               AS status_code,
           s.user_id, """  # noqa: S608 (LiteralString parts; values are parameters)
    + PROJECT_SQL
    + """ AS project
      FROM events e
      JOIN sessions s ON s.tenant_id = e.tenant_id AND s.session_id = e.session_id
      """
    + PROJECT_JOIN
    + """
     WHERE e.tenant_id = %(tenant)s AND e.kind IN ('api_error', 'usage')
       AND e.ts >= %(from)s AND e.ts < %(to)s
       AND e.session_id IN (
           SELECT session_id FROM events
            WHERE tenant_id = %(tenant)s AND kind = 'api_error' AND ts >= %(from)s AND ts < %(to)s
            GROUP BY session_id HAVING count(*) >= %(storm_min)s)
     ORDER BY e.session_id, e.ts, e.event_id"""
)


def storms(errors: Sequence[datetime]) -> list[tuple[int, int]]:
    """``(first, last)`` indexes into the sorted error times of each storm: a run of at least
    STORM_MIN_ERRORS errors, each at most STORM_GAP_S after the previous."""
    gap = timedelta(seconds=STORM_GAP_S)
    runs, start = [], 0
    for i in range(1, len(errors) + 1):
        if i == len(errors) or errors[i] - errors[i - 1] > gap:
            if i - start >= STORM_MIN_ERRORS:
                runs.append((start, i - 1))
            start = i
    return runs


def retry_storm_rule(rows: Iterable[Mapping[str, Any]]) -> list[Recommendation]:
    """The ``retry_storm`` rule (module docstring) over :data:`STORM_SQL` rows."""
    sessions: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        sessions[row["session_id"]].append(row)
    out = []
    gap = timedelta(seconds=STORM_GAP_S)
    for session_id, events in sessions.items():
        errors = sorted((e for e in events if e["kind"] == "api_error"), key=lambda e: e["ts"])
        requests = [e for e in events if e["kind"] == "usage"]
        for first, last in storms([e["ts"] for e in errors]):
            burst = errors[first : last + 1]
            begin, end = burst[0]["ts"], burst[-1]["ts"] + gap
            retried = [r for r in requests if begin <= r["ts"] <= end]
            error_cost = sum(to_nanos(e["cost_usd"]) for e in burst)
            retried_cost = sum(to_nanos(r["cost_usd"]) for r in retried)
            savings = error_cost + retried_cost
            codes = sorted({str(e["status_code"]) for e in burst if e["status_code"] is not None})
            span = int((burst[-1]["ts"] - begin).total_seconds())
            out.append(
                Recommendation(
                    Kind.RETRY_STORM,
                    Scope.SESSION,
                    {"session_id": session_id, "user": events[0]["user_id"], "project": events[0]["project"]},
                    {
                        "errors": len(burst),
                        "first_error_at": begin.isoformat(),
                        "span_s": span,
                        "status_codes": ", ".join(codes) or None,
                        "requests_retried": len(retried),
                        "errors_cost_nanos": error_cost,
                        "retried_cost_nanos": retried_cost,
                    },
                    savings,
                    f"Session {session_id} hit {len(burst)} API errors in {span} s"
                    f"{' (' + ', '.join(codes) + ')' if codes else ''}; the requests sent through "
                    f"the storm cost {_usd(savings)}. Back off or stop the agent when the API fails.",
                )
            )
    return out


# --- idle large context --------------------------------------------------------------------

#: Main-conversation requests sent more than ``%(idle_s)s`` seconds after the session's
#: previous request (both in the window) with a prompt above ``%(idle_context)s`` tokens.
IDLE_SQL: LiteralString = (
    """
    SELECT r.* FROM (
        SELECT e.session_id, e.ts, e.model, e.user_id,
               coalesce(e.input_tokens, 0) AS input_tokens, 0 AS output_tokens,
               coalesce(e.cache_read_tokens, 0) AS cache_read_tokens,
               coalesce(e.cache_creation_tokens, 0) AS cache_creation_tokens,
               """  # noqa: S608 (LiteralString parts; values are parameters)
    + ONE_HOUR_SQL
    + """ AS cache_creation_1h_tokens, 0 AS reasoning_tokens, """
    + PROMPT_SQL
    + """ AS prompt,
               extract(epoch FROM e.ts - lag(e.ts) OVER (PARTITION BY e.session_id ORDER BY e.ts))
                   AS idle_s
          FROM events e
         WHERE e.tenant_id = %(tenant)s AND e.kind = 'usage' AND e.main_context IS NOT FALSE
           AND e.ts >= %(from)s AND e.ts < %(to)s
    ) r
     WHERE r.idle_s > %(idle_s)s AND r.prompt > %(idle_context)s
     ORDER BY r.session_id, r.ts"""
)


def idle_context_rule(rows: Iterable[Mapping[str, Any]], catalogue: Catalogue) -> list[Recommendation]:
    """The ``idle_context`` rule (module docstring) over :data:`IDLE_SQL` rows."""
    sessions: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["idle_s"] is not None and row["idle_s"] > IDLE_MIN_S and row["prompt"] > IDLE_MIN_CONTEXT:
            sessions[row["session_id"]].append(row)
    out = []
    for session_id, resumes in sessions.items():
        savings = written = 0
        for r in resumes:
            priced = catalogue.lookup(r["model"])
            if priced is None:
                continue
            rates = priced.price.rates_for(r["prompt"])
            writes = Tokens(
                cache_creation=r["cache_creation_tokens"], cache_creation_1h=r["cache_creation_1h_tokens"]
            )
            savings += rates.cost_nanos(writes) - r["cache_creation_tokens"] * rates.cache_read
            written += r["cache_creation_tokens"]
        out.append(
            Recommendation(
                Kind.IDLE_CONTEXT,
                Scope.SESSION,
                {"session_id": session_id, "user": resumes[0]["user_id"]},
                {
                    "resumptions": len(resumes),
                    "longest_idle_s": int(max(float(r["idle_s"]) for r in resumes)),
                    "largest_prompt": max(r["prompt"] for r in resumes),
                    "cache_written_tokens": written,
                },
                savings,
                f"Session {session_id} came back {len(resumes)} time(s) after more than "
                f"{IDLE_MIN_S // 60} minutes idle with over {IDLE_MIN_CONTEXT:,} tokens of context: "
                f"re-writing its expired cache cost {_usd(savings)} more than reading it. "
                "/compact or /clear before a long pause.",
            )
        )
    return out


@dataclass(slots=True)
class Inputs:
    """The rows of every query of one window (what :func:`recommend` needs)."""

    cache: Sequence[Mapping[str, Any]] = field(default_factory=list)
    compactions: Sequence[Mapping[str, Any]] = field(default_factory=list)
    patterns: Sequence[Mapping[str, Any]] = field(default_factory=list)
    errors: Sequence[Mapping[str, Any]] = field(default_factory=list)
    #: MOVABLE_SQL's rows for ``smaller_model_candidates(patterns, errors)``.
    movable: Sequence[Mapping[str, Any]] = field(default_factory=list)
    storms: Sequence[Mapping[str, Any]] = field(default_factory=list)
    idle: Sequence[Mapping[str, Any]] = field(default_factory=list)


def recommend(inputs: Inputs, catalogue: Catalogue) -> list[Recommendation]:
    """Every rule over ``inputs``, sorted by :func:`ordered`."""
    return ordered(
        [
            *cache_rule(inputs.cache, catalogue),
            *compaction_rule(inputs.compactions, catalogue),
            *smaller_model_rule(
                smaller_model_candidates(inputs.patterns, inputs.errors, catalogue), inputs.movable, catalogue
            ),
            *retry_storm_rule(inputs.storms),
            *idle_context_rule(inputs.idle, catalogue),
        ]
    )
