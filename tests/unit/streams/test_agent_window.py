"""The window comes from the agent when it says; predictions aim at where it compacts; usage
by source (issue 14 items 1 and 3)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

T0 = 1_795_485_000_000_000_000
S = 1_000_000_000


def statusline(otlp_build: SimpleNamespace, time_ns: int, size: int, used: float) -> ExportLogsServiceRequest:
    """What ``tokentide statusline`` sends: one record in scope tokentide.statusline."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(otlp_build.key_values({"service.name": "claude-code"}))
    scope = resource_logs.scope_logs.add()
    scope.scope.name = "tokentide.statusline"
    record = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time_ns)
    record.body.string_value = "tokentide.statusline"
    record.attributes.extend(
        otlp_build.key_values(
            {
                "event.name": "statusline",
                "session.id": "s-1",
                "context_window.size": size,
                "context_window.used_percentage": used,
                "model": "claude-opus-5-5",
            }
        )
    )
    scope.log_records.append(record)
    return request


def requests(otlp_build: SimpleNamespace, contexts: list[int], *, model: str, start: int = 0) -> Any:
    return otlp_build.logs(
        [
            (
                T0 + (start + i) * S,
                otlp_build.api_request(
                    start + i,
                    model=model,
                    input_tokens=c - 4800,
                    cache_read_tokens=4500,
                    cache_creation_tokens=300,
                ),
            )
            for i, c in enumerate(contexts)
        ]
    )


def test_the_model_table_decides_only_when_the_agent_says_nothing(pipeline: Any, otlp_build: Any) -> None:
    pipeline.send_logs(requests(otlp_build, [100_000], model="claude-haiku-4-5"))
    context = pipeline.state("s-1").context
    assert (context.window, context.window_source) == (200_000, "model_table")

    pipeline.send_logs(statusline(otlp_build, T0 + 2 * S, 980_000, 10.2))
    state = pipeline.state("s-1")
    assert (state.context.window, state.context.window_source) == (980_000, "agent")
    assert state.events == 1  # tokentide's own report is not one of the agent's events

    pipeline.send_logs(requests(otlp_build, [120_000], model="claude-haiku-4-5", start=3))
    context = pipeline.state("s-1").context
    assert (context.window, context.window_source, context.tokens) == (980_000, "agent", 120_000)


def test_unknown_models_get_the_default_and_say_so(pipeline: Any, otlp_build: Any) -> None:
    pipeline.send_logs(requests(otlp_build, [50_000], model="a-model-nobody-knows"))
    context = pipeline.state("s-1").context
    assert (context.window, context.window_source) == (200_000, "default")


def test_no_false_signal_when_the_agent_reports_a_1m_window(pipeline: Any, otlp_build: Any) -> None:
    """A model the table knows at 200k (or does not know) but the agent runs at 1M: once the
    agent says so, 300k of context raises nothing."""
    pipeline.send_logs(statusline(otlp_build, T0, 1_000_000, 1.0))
    outputs = pipeline.send_logs(
        requests(otlp_build, [150_000, 300_000], model="a-model-nobody-knows", start=1)
    )
    assert all(o.signals is None for o in outputs)
    assert pipeline.state("s-1").context.ratio == 0.3


def test_an_automatic_compaction_teaches_where_the_agent_compacts(pipeline: Any, otlp_build: Any) -> None:
    pipeline.send_logs(requests(otlp_build, [100_000, 120_000, 140_000], model="claude-haiku-4-5"))
    before = pipeline.state("s-1").context
    assert before.auto_compact_at is None
    assert before.requests_left is not None
    compaction = otlp_build.logs(
        [
            (
                T0 + 10 * S,
                {
                    "session.id": "s-1",
                    "event.name": "compaction",
                    "event.sequence": 10,
                    "trigger": "auto",
                    "pre_tokens": 160_000,
                    "post_tokens": 30_000,
                },
            )
        ]
    )
    pipeline.send_logs(compaction)
    pipeline.send_logs(requests(otlp_build, [40_000, 60_000], model="claude-haiku-4-5", start=11))
    after = pipeline.state("s-1").context
    assert after.auto_compact_at == 160_000
    assert after.growth is not None
    # aimed at 160k, not the 200k window
    assert after.requests_left == round((160_000 - 60_000) / after.growth, 2)


def test_usage_by_source_sums_to_the_totals(pipeline: Any, otlp_build: Any) -> None:
    main = otlp_build.api_request(0, query_source="repl_main_thread", input_tokens=1000, cost_usd=0.01)
    title = otlp_build.api_request(
        1, query_source="generate_session_title", model="claude-haiku-4-5", input_tokens=10, cost_usd=0.0001
    )
    explore = {
        **otlp_build.api_request(2, query_source="agent:builtin", input_tokens=5000, cost_usd=0.05),
        "agent.name": "Explore",
    }
    pdf = {
        **otlp_build.api_request(3, query_source="repl_main_thread", input_tokens=7, cost_usd=0.002),
        "skill.name": "pdf",
        "mcp_server.name": "github",
    }
    done = {
        "session.id": "s-1",
        "event.name": "subagent_completed",
        "event.sequence": 4,
        "agent_type": "Explore",
        "total_tokens": 5100,
    }
    pipeline.send_logs(
        otlp_build.logs([(T0 + i * S, attrs) for i, attrs in enumerate([main, title, explore, pdf, done])])
    )
    state = pipeline.state("s-1")
    by = {(s.query_source, s.agent_name, s.skill, s.mcp_server): s for s in state.by_source}
    assert set(by) == {
        ("main", None, None, None),
        ("auxiliary", None, None, None),
        ("subagent", "Explore", None, None),
        ("main", None, "pdf", "github"),
    }
    assert by["subagent", "Explore", None, None].tokens.input == 5000
    assert sum(s.tokens.input for s in state.by_source) == state.tokens.input == 1000 + 10 + 5000 + 7
    assert sum(s.cost_nanos for s in state.by_source) == state.cost_nanos
    assert (
        sum(s.requests for s in state.by_source) == state.api_requests == 4
    )  # subagent_completed adds nothing
    # the subagent's context is its own: the session's context stays the main conversation's
    assert state.context.tokens == 7 + 4500 + 300


def test_window_reports_take_no_place_in_the_dedup_window(make_pipeline: Any, otlp_build: Any) -> None:
    pipeline = make_pipeline(dedup_window=16)
    pipeline.send_logs(requests(otlp_build, [100_000], model="claude-opus-4-8"))
    before = len(pipeline.stored("s-1").recent)
    for i in range(40):  # a status line reporting for a long while
        pipeline.send_logs(statusline(otlp_build, T0 + (i + 2) * S, 980_000, 10.0 + i / 10))
    stored = pipeline.stored("s-1")
    assert len(stored.recent) == before
    assert stored.state.context.window == 980_000
    assert stored.state.events == 1  # the one request; the reports are not the agent's events
    # the request re-sent is still recognised
    pipeline.send_logs(requests(otlp_build, [100_000], model="claude-opus-4-8"))
    assert pipeline.state("s-1").api_requests == 1
