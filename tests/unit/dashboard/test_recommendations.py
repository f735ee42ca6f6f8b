"""Each recommendation rule (dashboard/recommendations.py) on hand-made query rows, its savings
against the formula of its docstring computed here by hand on the table of ``insight_prices.py``
(nano-USD per token: big-1 10000 in / 50000 out / 1000 cache read / 12500 cache write /
20000 one-hour write, its tier above 1000 prompt tokens twice that; small-1 1000 / 5000 / 100 /
1250 / 2000; other-1, another provider, 2000 / 8000)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dashboard import recommendations as r
from dashboard.compare import Catalogue
from tests.unit.dashboard.insight_prices import TABLE, catalogue

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- cache ---------------------------------------------------------------------------------


def cache(
    team: str | None, user: str | None, model: str | None, input_: int, cache_read: int
) -> dict[str, Any]:
    return {
        "team": team,
        "user_id": user,
        "model": model,
        "input_tokens": input_,
        "cache_read_tokens": cache_read,
    }


def test_a_user_far_below_the_rest_of_the_team_would_save_the_tokens_not_read_from_cache() -> None:
    rows = [
        cache("t1", "ann", "big-1", 150_000, 50_000),
        cache("t1", "ann", "small-1", 10_000, 0),
        cache("t1", "ann", "mystery-model", 1_000, 0),
        cache("t1", "bob", "big-1", 20_000, 180_000),  # the rest of t1: 180k / 200k = 0.9
        cache("t2", "cat", "big-1", 500_000, 0),  # alone in its team: nothing to compare with
    ]
    (rec,) = r.cache_rule(rows, catalogue())
    assert (rec.kind, rec.scope, rec.subject) == (r.Kind.CACHE, r.Scope.USER, {"team": "t1", "user": "ann"})
    # big-1: floor(0.9 * 200000) - 50000 = 130000 tokens at (10000 - 1000);
    # small-1: floor(0.9 * 10000) - 0 = 9000 at (1000 - 100); the unknown model saves nothing.
    assert rec.savings_nanos == 130_000 * 9_000 + 9_000 * 900 == 1_178_100_000
    assert rec.evidence["tokens_to_cache"] == 139_000
    assert rec.evidence["cache_ratio"] == 50_000 / 211_000
    assert rec.evidence["team_cache_ratio"] == 0.9
    assert rec.evidence["unpriced_models"] == "mystery-model"
    assert "$1.18" in rec.message
    assert "ann" in rec.message


def test_the_cache_gap_must_be_more_than_twenty_points_and_the_user_large_enough() -> None:
    rows = [
        cache("t3", "cid", "big-1", 100_000, 100_000),  # 0.5
        cache("t3", "dan", "big-1", 30_000, 70_000),  # 0.7: exactly 20 points above cid
        cache("t4", "eve", "big-1", 99_999, 0),  # 0 against 1.0, but under 100000 prompt tokens
        cache("t4", "fay", "big-1", 0, 100_000),
    ]
    assert r.cache_rule(rows, catalogue()) == []


# --- compaction ----------------------------------------------------------------------------


def compaction(session: str, seconds: float, pre: int | None, post: int | None) -> dict[str, Any]:
    return {
        "session_id": session,
        "ts": at(seconds),
        "pre_tokens": pre,
        "post_tokens": post,
        "model": "big-1",
        "user_id": "ann",
        "project": "web",
    }


def test_compactions_after_the_first_cost_their_context_read_and_summary_write() -> None:
    rows = [
        compaction("s1", 300, 800, 50),
        compaction("s1", 0, 900, 100),  # the first, in time: free
        compaction("s1", 100, 1500, 200),
        compaction("s2", 0, 5000, 100),
        compaction("s2", 50, 5000, 100),  # s2: two only
    ]
    (rec,) = r.compaction_rule(rows, catalogue())
    assert rec.subject == {"session_id": "s1", "user": "ann", "project": "web"}
    # 1500 > 1000: the tier, 1500*2000 + 200*25000; then 800*1000 + 50*12500 at base rates.
    assert rec.savings_nanos == 1500 * 2_000 + 200 * 25_000 + 800 * 1_000 + 50 * 12_500 == 9_425_000
    assert rec.evidence["compactions"] == 3
    assert (rec.evidence["pre_tokens"], rec.evidence["post_tokens"]) == (2300, 250)


def test_compactions_without_sizes_or_price_save_nothing_but_are_still_said() -> None:
    rows = [compaction("s3", i, None, None) for i in range(3)]
    (rec,) = r.compaction_rule(rows, catalogue())
    assert rec.savings_nanos == 0
    unknown = [{**compaction("s4", i, 1000, 10), "model": "mystery-model"} for i in range(4)]
    (rec,) = r.compaction_rule(unknown, catalogue())
    assert rec.savings_nanos == 0
    assert rec.evidence["priced"] is False


# --- smaller model -------------------------------------------------------------------------


def request(
    project: str, model: str, input_: int, output: int, source: str = "repl_main_thread"
) -> dict[str, Any]:
    return {
        "project": project,
        "query_source": source,
        "agent_name": "",
        "model": model,
        "input_tokens": input_,
        "output_tokens": output,
        "cache_read_tokens": 0,
        "cache_creation_tokens": 0,
        "cache_creation_1h_tokens": 0,
        "reasoning_tokens": 0,
    }


def served_by_small(project: str, count: int = 5) -> list[dict[str, Any]]:
    return [request(project, "small-1", 500 + 100 * i, 300 - 10 * i) for i in range(count)]  # max 900 / 300


def smaller(
    rows: list[dict[str, Any]], errors: list[dict[str, Any]], c: Catalogue | None = None
) -> list[r.Recommendation]:
    """The rule over what its two queries give for ``rows`` (one per request), computed here as
    their SQL says: per project, pattern and model the requests, largest prompt and output; then
    the candidates' requests no larger than those, summed per tier bucket (the table's one
    threshold: 1000 prompt tokens)."""
    c = c or catalogue()
    patterns: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for q in rows:
        key = (q["project"], q["query_source"], q["agent_name"], q["model"])
        p = patterns.setdefault(
            key, dict(zip(("project", "query_source", "agent_name", "model"), key, strict=True))
        )
        p["requests"] = p.get("requests", 0) + 1
        p["max_prompt"] = max(p.get("max_prompt", 0), prompt(q))
        p["max_output"] = max(p.get("max_output", 0), q["output_tokens"])
    candidates = r.smaller_model_candidates(list(patterns.values()), errors, c)
    movable: dict[tuple[int, int], dict[str, Any]] = {}
    for idx, cand in enumerate(candidates):
        for q in rows:
            if (
                (q["project"], q["query_source"], q["agent_name"])
                == (cand.project, cand.query_source, cand.agent_name)
                and q["model"] in cand.large_ids
                and prompt(q) <= cand.max_prompt
                and q["output_tokens"] <= cand.max_output
            ):
                bucket = int(prompt(q) > 1000)
                m = movable.setdefault(
                    (idx, bucket), {"idx": idx, "bucket": bucket, "requests": 0} | dict.fromkeys(TOKENS, 0)
                )
                m["requests"] += 1
                for k in TOKENS:
                    m[k] += q[k]
    return r.smaller_model_rule(candidates, list(movable.values()), c)


TOKENS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cache_creation_1h_tokens",
    "reasoning_tokens",
)


def prompt(q: dict[str, Any]) -> int:
    return int(q["input_tokens"] + q["cache_read_tokens"] + q["cache_creation_tokens"])


def test_requests_a_cheaper_model_of_the_provider_served_in_the_project_move_to_it() -> None:
    rows = [
        *served_by_small("web"),
        request("web", "big-1", 800, 200),  # fits: prompt 800 <= 900, output 200 <= 300
        request("web", "big-1", 850, 400),  # output larger than small-1 gave
        request("web", "big-1", 1200, 10),  # prompt larger than small-1 took
        *[request("web", "other-1", 100, 10) for _ in range(6)],  # another provider
        request("web", "big-1", 100, 10, source="agent:builtin"),  # another pattern
    ]
    (rec,) = smaller(rows, [])
    assert rec.subject == {"project": "web", "query_source": "repl_main_thread", "agent_name": None}
    # cost on big-1 - cost on small-1 of the one request that fits
    assert rec.savings_nanos == (800 * 10_000 + 200 * 50_000) - (800 * 1_000 + 200 * 5_000) == 16_200_000
    assert rec.evidence == {
        "model": "big-1",
        "smaller_model": "small-1",
        "requests": 3,
        "requests_movable": 1,
        "smaller_model_requests": 5,
        "smaller_model_max_prompt": 900,
    }


def test_a_moved_request_above_a_tier_saves_at_the_tiers_rates_and_snapshots_count_as_their_model() -> None:
    rows = [
        *[request("tiers", "small-1", 1200, 300) for _ in range(4)],
        request("tiers", "small-1-20250101", 600, 100),  # the same model: five requests served
        request("tiers", "big-1", 1100, 100),  # above 1000: big-1's tier
    ]
    (rec,) = smaller(rows, [])
    assert rec.evidence["smaller_model_requests"] == 5
    assert rec.savings_nanos == (1100 * 20_000 + 100 * 100_000) - (1100 * 1_000 + 100 * 5_000) == 30_400_000


def test_no_move_to_a_smaller_model_that_would_cost_more_on_these_requests() -> None:
    """lean-1 has lower input and output rates than big-1 but reads the cache at 5 USD/MTok
    (big-1: 1): on requests that mostly read the cache it would cost more, so nothing is said."""
    table = json.loads(json.dumps(TABLE))
    table["models"]["lean-1"] = {
        "provider": "acme",
        "input": 1,
        "output": 5,
        "cache_read": 5,
        "cache_creation": 1.25,
        "cache_creation_1h": 2,
    }
    c = Catalogue.from_json(json.dumps(table))

    def cached(model: str) -> dict[str, Any]:
        return request("cachey", model, 10, 10) | {"cache_read_tokens": 800}

    rows = [*[cached("lean-1") for _ in range(5)], cached("big-1")]
    # on big-1: 10 x 10000 + 10 x 50000 + 800 x 1000; on lean-1: 10 x 1000 + 10 x 5000 + 800 x 5000
    assert 10 * 10_000 + 10 * 50_000 + 800 * 1_000 < 10 * 1_000 + 10 * 5_000 + 800 * 5_000
    assert smaller(rows, [], c) == []
    # small-1 is cheaper at every rate: the same requests on it are recommended as before.
    (rec,) = smaller([*[cached("small-1") for _ in range(5)], cached("big-1")], [], c)
    assert rec.savings_nanos == (10 * 10_000 + 10 * 50_000 + 800 * 1_000) - (
        10 * 1_000 + 10 * 5_000 + 800 * 100
    )


def test_no_move_to_a_model_that_erred_in_the_project_or_served_too_few() -> None:
    rows = [*served_by_small("api"), request("api", "big-1", 800, 200)]
    errors = [{"project": "api", "model": "small-1", "errors": 1}]
    assert smaller(rows, errors) == []
    assert smaller([*served_by_small("cli", 4), request("cli", "big-1", 800, 200)], []) == []
    # nothing no larger than what the smaller model served: no recommendation
    assert smaller([*served_by_small("big"), request("big", "big-1", 5000, 10)], []) == []
    # an error elsewhere does not count against the project
    (rec,) = smaller(rows, [{"project": "web", "model": "small-1", "errors": 3}])
    assert rec.savings_nanos == 16_200_000


# --- retry storms --------------------------------------------------------------------------


def event(kind: str, seconds: float, cost: str | None, session: str = "s9") -> dict[str, Any]:
    return {
        "session_id": session,
        "ts": at(seconds),
        "kind": kind,
        "cost_usd": None if cost is None else Decimal(cost),
        "model": "big-1",
        "status_code": "529" if kind == "api_error" else None,
        "user_id": "ann",
        "project": "web",
    }


def test_storms_are_runs_of_errors_at_most_five_minutes_apart() -> None:
    times = [at(s) for s in (0, 300, 600, 1000, 1301, 1400)]
    assert r.storms(times) == [(0, 2)]  # 300 s apart still joins; 301 s does not
    assert r.storms(times[:2]) == []
    assert r.storms([]) == []


def test_a_retry_storm_costs_its_errors_and_the_requests_through_it() -> None:
    rows = [
        event("api_error", 0, None),
        event("usage", 30, "0.01"),
        event("api_error", 60, "0.001"),
        event("api_error", 120, None),
        event("usage", 400, "0.02"),  # within 300 s of the last error
        event("usage", 500, "0.03"),  # after
        event("api_error", 1000, None),  # alone
    ]
    (rec,) = r.retry_storm_rule(rows)
    assert rec.subject == {"session_id": "s9", "user": "ann", "project": "web"}
    assert rec.savings_nanos == 1_000_000 + 10_000_000 + 20_000_000
    assert rec.evidence["errors"] == 3
    assert rec.evidence["span_s"] == 120
    assert rec.evidence["requests_retried"] == 2
    assert rec.evidence["status_codes"] == "529"


# --- idle large context --------------------------------------------------------------------


def resume(
    idle_s: float, prompt: int, cache_creation: int, one_hour: int, session: str = "s7"
) -> dict[str, Any]:
    return {
        "session_id": session,
        "ts": at(0),
        "model": "big-1",
        "user_id": "ann",
        "input_tokens": prompt - cache_creation,
        "output_tokens": 0,
        "cache_read_tokens": 0,
        "cache_creation_tokens": cache_creation,
        "cache_creation_1h_tokens": one_hour,
        "reasoning_tokens": 0,
        "prompt": prompt,
        "idle_s": Decimal(idle_s),
    }


def test_resuming_a_large_context_after_a_long_pause_costs_the_cache_rewrite() -> None:
    rows = [
        resume(2000, 150_000, 100_000, 40_000),
        resume(1800, 150_000, 100_000, 0),  # exactly 30 minutes: not more than
        resume(4000, 100_000, 100_000, 0),  # exactly 100000 tokens: not above
    ]
    (rec,) = r.idle_context_rule(rows, catalogue())
    # the tier (150000 > 1000): 60000*25000 + 40000*40000 written, less 100000*2000 read
    assert rec.savings_nanos == 60_000 * 25_000 + 40_000 * 40_000 - 100_000 * 2_000 == 2_900_000_000
    assert rec.evidence == {
        "resumptions": 1,
        "longest_idle_s": 2000,
        "largest_prompt": 150_000,
        "cache_written_tokens": 100_000,
    }


# --- all together --------------------------------------------------------------------------


def test_recommend_sorts_by_savings_and_an_empty_window_has_none() -> None:
    inputs = r.Inputs(
        cache=[cache("t1", "ann", "big-1", 150_000, 50_000), cache("t1", "bob", "big-1", 20_000, 180_000)],
        compactions=[compaction("s1", i, 900, 100) for i in range(3)],
        storms=[event("api_error", i * 10, None) for i in range(3)],
        idle=[resume(2000, 150_000, 100_000, 40_000)],
    )
    found = r.recommend(inputs, catalogue())
    assert [x.kind for x in found] == [
        r.Kind.IDLE_CONTEXT,
        r.Kind.CACHE,
        r.Kind.COMPACTION,
        r.Kind.RETRY_STORM,
    ]
    assert [x.savings_nanos for x in found] == sorted((x.savings_nanos for x in found), reverse=True)
    assert found[0].savings_usd == 2.9
    assert r.recommend(r.Inputs(), catalogue()) == []
