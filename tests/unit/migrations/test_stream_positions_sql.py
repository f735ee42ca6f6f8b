"""Migration 0011 (stream positions) is right for both layouts without TimescaleDB here:
its triggers and plain indexes suit ``signals`` and ``sessions`` only because no migration of
either layout makes them hypertables, and it is one file for both (pglast, as the other
static checks)."""

from __future__ import annotations

import pglast
import pytest
from pglast import ast

from tokentide.migrate import Layout, available

POSITIONED = ("signals", "sessions")


@pytest.mark.parametrize("layout", list(Layout))
def test_signals_and_sessions_stay_regular_tables(layout: Layout) -> None:
    for version, sql in available(layout):
        for raw in pglast.parse_sql(sql):
            stmt = raw.stmt
            if not isinstance(stmt, ast.SelectStmt):
                continue
            for target in stmt.targetList or ():
                call = target.val
                if isinstance(call, ast.FuncCall) and call.funcname[-1].sval == "create_hypertable":
                    table = call.args[0]
                    assert isinstance(table, ast.A_Const), (version, call)
                    assert table.val.sval not in POSITIONED, version


def test_0011_is_the_same_for_both_layouts() -> None:
    plain, timescale = (dict(available(layout))["0011_stream_positions"] for layout in Layout)
    assert plain == timescale


def test_both_tables_get_positions_a_trigger_and_an_index() -> None:
    sql = dict(available())["0011_stream_positions"]
    added: dict[str, list[str]] = {t: [] for t in POSITIONED}
    triggers: dict[str, list[str]] = {}
    indexes: dict[str, list[str]] = {}
    for raw in pglast.parse_sql(sql):
        stmt = raw.stmt
        if isinstance(stmt, ast.AlterTableStmt):
            added.setdefault(stmt.relation.relname, []).extend(
                c.def_.colname for c in stmt.cmds if c.subtype == pglast.enums.AlterTableType.AT_AddColumn
            )
        elif isinstance(stmt, ast.CreateTrigStmt):
            triggers[stmt.relation.relname] = [e.sval for e in stmt.funcname]
            assert stmt.row
            assert stmt.timing == pglast.enums.TRIGGER_TYPE_BEFORE
        elif isinstance(stmt, ast.IndexStmt):
            indexes[stmt.relation.relname] = [p.name for p in stmt.indexParams]
    for table in POSITIONED:
        assert added[table] == ["stream_xid", "stream_pos"], table
        assert triggers[table] == ["tokentide_stream_position"], table
        assert indexes[table] == ["tenant_id", "stream_xid", "stream_pos"], table
