"""Plans and projects of sessions (issue 17), pure parts: what the plan route accepts, what it
stores under each privacy mode, the counts, the timeline line, and the project SQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dashboard import plans, project_list
from dashboard.context_routes import redactor_of, text_mode
from dashboard.filters import GroupBy, SessionFilter, list_sessions, usage
from dashboard.projects import PROJECT_JOIN, PROJECT_SQL
from dashboard.timeline import TimelineKind, merge
from ingest.redact import Redactor
from tokentide.settings import DEV_REDACTION_KEY, DashboardSettings

ITEMS = [
    {"content": "Read the code", "status": "completed", "activeForm": "Reading the code"},
    {"content": "Write the tests", "status": "in_progress", "activeForm": "Writing the tests"},
    {"content": "Ship it", "status": "pending"},
]
REDACTOR = Redactor(b"unit-test-key")


def plan_in(**body: Any) -> plans.PlanIn:
    return plans.PlanIn.model_validate(body)


def test_a_plan_is_parsed_with_claude_codes_field_names() -> None:
    body = plan_in(todos=ITEMS, cwd="/w/api", git_branch="main")
    assert [(i.content, i.status, i.active_form) for i in body.todos or []] == [
        ("Read the code", "completed", "Reading the code"),
        ("Write the tests", "in_progress", "Writing the tests"),
        ("Ship it", "pending", None),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"todos": [{"content": "x", "status": "blocked"}]},  # unknown status
        {"todos": [{"content": "", "status": "pending"}]},  # no text
        {"todos": [{"status": "pending"}]},
        {"todos": [{"content": "x" * (plans.ITEM_TEXT_MAX + 1), "status": "pending"}]},
        {"todos": [{"content": "x", "status": "pending", "activeForm": "y" * (plans.ITEM_TEXT_MAX + 1)}]},
        {"todos": [{"content": str(i), "status": "pending"} for i in range(plans.MAX_ITEMS + 1)]},
        {"todos": "not a list"},
        {"cwd": "/" * (plans.CWD_MAX + 1)},
        {"git_branch": "b" * (plans.BRANCH_MAX + 1)},
        {"project": "p" * (plans.PROJECT_MAX + 1)},
        {"project": ""},
        {"colour": "red"},  # unknown field
    ],
)
def test_bad_plans_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        plan_in(**body)


def test_the_caps_allow_exactly_the_largest_plan() -> None:
    largest = [{"content": "x" * plans.ITEM_TEXT_MAX, "status": "pending"}] * plans.MAX_ITEMS
    assert len(plan_in(todos=largest).todos or []) == plans.MAX_ITEMS


def test_a_tenant_without_a_mode_of_its_own_gets_ingests_default() -> None:
    assert [text_mode(None, REDACTOR, default) for default in ("off", "hash", "drop")] == [
        "kept",
        "hashed",
        "dropped",
    ]
    assert text_mode("drop", REDACTOR, "off") == "dropped"


@pytest.mark.parametrize(
    ("privacy", "key", "mode"),
    [
        ("off", REDACTOR, "kept"),
        ("hash", REDACTOR, "hashed"),
        (None, REDACTOR, "hashed"),
        ("drop", REDACTOR, "dropped"),
        ("hash", None, "dropped"),
        ("off", None, "kept"),
    ],
)
def test_the_text_mode_follows_the_tenants_privacy(
    privacy: str | None, key: Redactor | None, mode: str
) -> None:
    assert text_mode(privacy, key) == mode


def test_stored_texts_follow_the_mode_and_statuses_always_stay() -> None:
    items = plan_in(todos=ITEMS).todos or []
    kept = plans.stored_items(items, "kept", REDACTOR.digest)
    assert kept[1] == {
        "content": "Write the tests",
        "active_form": "Writing the tests",
        "status": "in_progress",
    }
    hashed = plans.stored_items(items, "hashed", REDACTOR.digest)
    assert hashed[1] == {
        "content": REDACTOR.digest(b"Write the tests"),
        "active_form": REDACTOR.digest(b"Writing the tests"),
        "status": "in_progress",
    }
    assert hashed[1]["content"].startswith("redacted:")
    assert hashed[2]["active_form"] is None
    dropped = plans.stored_items(items, "dropped", None)
    assert dropped == [
        {"content": None, "active_form": None, "status": s} for s in ("completed", "in_progress", "pending")
    ]
    for stored in (kept, hashed, dropped):
        assert plans.counts(stored) == (3, 1, 1)


def test_the_digest_changes_with_any_item_and_only_then() -> None:
    items = plan_in(todos=ITEMS).todos or []
    same = plans.stored_items(plan_in(todos=[dict(i) for i in ITEMS]).todos or [], "kept", None)
    base = plans.stored_items(items, "kept", None)
    assert plans.plan_digest(base) == plans.plan_digest(same)
    moved = [dict(ITEMS[0]), dict(ITEMS[1], status="completed"), dict(ITEMS[2])]
    assert plans.plan_digest(
        plans.stored_items(plan_in(todos=moved).todos or [], "kept", None)
    ) != plans.plan_digest(base)
    assert plans.plan_digest(list(reversed(base))) != plans.plan_digest(base)


def plan_row(version: int, statuses: list[str], at: datetime, mode: str = "kept") -> dict[str, Any]:
    items = [
        {"content": f"item {i}", "active_form": f"doing item {i}", "status": s}
        for i, s in enumerate(statuses)
    ]
    total, done, in_progress = plans.counts(items)
    return {
        "session_id": "s",
        "version": version,
        "at": at,
        "items": items,
        "total": total,
        "done": done,
        "in_progress": in_progress,
        "text_mode": mode,
    }


def test_the_plan_out_names_the_item_in_progress_and_the_counts() -> None:
    at = datetime(2026, 12, 3, 12, tzinfo=UTC)
    out = plans.plan_out(plan_row(3, ["completed"] * 3 + ["in_progress"] + ["pending"] * 3, at))
    assert (out.version, out.total, out.done, out.in_progress) == (3, 7, 3, 1)
    assert out.current is not None
    assert out.current.content == "item 3"
    assert plans.plan_line(out) == "plan v3: 3 of 7 done · in progress: doing item 3"
    idle = plans.plan_out(plan_row(1, ["pending", "pending"], at))
    assert idle.current is None
    assert plans.plan_line(idle) == "plan v1: 0 of 2 done"
    dropped = plan_row(2, ["in_progress"], at, "dropped")
    dropped["items"][0] |= {"content": None, "active_form": None}
    assert plans.plan_line(plans.plan_out(dropped)) == "plan v2: 0 of 1 done · 1 in progress"


def test_plan_versions_join_the_timeline_in_time_order() -> None:
    t = [datetime(2026, 12, 3, 12, m, tzinfo=UTC) for m in range(4)]
    signal = {
        "ts": t[2],
        "signal_id": "g",
        "kind": "context_warning",
        "ratio": 0.8,
        "tokens": 8,
        "context_window": 10,
    }
    items = merge(
        [],
        [signal | {"message": None}],
        10,
        [plan_row(2, ["completed"], t[3]), plan_row(1, ["pending"], t[1])],
    )
    assert [(i.kind, i.at) for i in items] == [
        (TimelineKind.PLAN, t[1]),
        (TimelineKind.SIGNAL, t[2]),
        (TimelineKind.PLAN, t[3]),
    ]
    assert items[2].plan is not None
    assert items[2].plan.done == 1
    assert items[0].summary == "plan v1: 0 of 1 done"


def test_project_sql_starts_from_the_tenant_and_uses_the_one_definition() -> None:
    for statement in (project_list.PROJECTS, project_list.PROJECT, project_list.PROJECT_SESSIONS):
        assert "s.tenant_id = %(tenant)s" in statement
        assert PROJECT_SQL in statement
        assert PROJECT_JOIN in statement
    assert "%(project)s" in project_list.PROJECT
    assert "%(project)s" not in project_list.PROJECTS


def test_the_session_list_filters_by_project_with_a_parameter() -> None:
    page, count, params = list_sessions(SessionFilter(project="api'; DROP TABLE x"), "team")
    assert params == {"project": "api'; DROP TABLE x"}
    for statement in (page, count):
        assert "tenant_id = %(tenant)s AND session_id IN (SELECT s.session_id" in statement
        assert "DROP" not in statement


def test_usage_by_project_joins_the_context() -> None:
    statement = usage(GroupBy.PROJECT)
    assert PROJECT_JOIN in statement
    assert PROJECT_SQL + " AS key" in statement
    assert PROJECT_JOIN not in usage(GroupBy.MODEL)


def test_a_project_is_parallel_with_more_than_one_active_session() -> None:
    at = datetime(2026, 12, 3, tzinfo=UTC)
    row = {
        "project": "api",
        "sessions": 3,
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 4,
        "reasoning_tokens": 0,
        "cache_creation_1h_tokens": 0,
        "cost_usd": None,
        "unpriced_requests": 2,
        "api_requests": 2,
        "started_at": at,
        "last_seen_at": at,
    }
    assert [project_list.project_out(row | {"active_sessions": n}).parallel for n in (0, 1, 2, 3)] == [
        False,
        False,
        True,
        True,
    ]
    assert project_list.project_out(row | {"active_sessions": 0}).cost_usd is None


def settings(**values: Any) -> DashboardSettings:
    return DashboardSettings(database_url="postgresql://u:p@db/x", _env_file=None, **values)


def test_the_dashboard_hashes_with_ingests_key_and_never_with_the_development_key() -> None:
    configured = redactor_of(settings(redaction_key="the-fleets-redaction-key"))
    assert configured is not None
    assert configured.digest(b"x") == Redactor(b"the-fleets-redaction-key").digest(b"x")
    assert redactor_of(settings()) is None  # closed mode, no key: texts are dropped
    assert redactor_of(settings(redaction_key=DEV_REDACTION_KEY)) is None
    local = redactor_of(settings(open_mode=True))
    assert local is not None
    assert local.digest(b"x") == Redactor(DEV_REDACTION_KEY.encode()).digest(b"x")
