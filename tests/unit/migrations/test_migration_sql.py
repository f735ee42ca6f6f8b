"""Every migration of both layouts parses as PostgreSQL (pglast: PostgreSQL's own parser), and
the two layouts keep one contract: the same relations, columns and functions.

Both layouts also run against real servers in the integration tests (the TimescaleDB leg of
``make test``, issue 15); this is the check that needs no server: each statement, each PL/pgSQL
body (functions and DO blocks, embedded SQL included) and each SQL function body is parsed.
"""

from __future__ import annotations

from typing import Any

import pglast
import pytest
from pglast import ast
from pglast.stream import RawStream

from tokentide.migrate import Layout, available

LAYOUTS = list(Layout)
#: The functions the sink and operators call: same signature in both layouts.
CONTRACT_FUNCTIONS = (
    "tokentide_create_partitions",
    "tokentide_maintain",
    "tokentide_rollup_hours",
    "tokentide_role_tenant",
    "tokentide_bind_tenant_role",
    "tokentide_unbind_tenant_role",
)


def statements(sql: str) -> list[tuple[Any, str]]:
    """(parse tree, source text) of each statement of ``sql``."""
    out = []
    for raw in pglast.parse_sql(sql):
        end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(sql)
        out.append((raw.stmt, sql[raw.stmt_location : end]))
    return out


def option(stmt: ast.CreateFunctionStmt, name: str) -> Any:
    return next((o.arg for o in stmt.options if o.defname == name), None)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_migration_parses_to_the_last_plpgsql_statement(layout: Layout) -> None:
    for version, sql in available(layout):
        parsed = statements(sql)
        assert parsed, version
        for stmt, text in parsed:
            if isinstance(stmt, ast.DoStmt):
                pglast.parse_plpgsql(text)
            if isinstance(stmt, ast.CreateFunctionStmt):
                language = option(stmt, "language").sval
                body = option(stmt, "as")[0].sval
                if language == "plpgsql":
                    pglast.parse_plpgsql(text)
                else:
                    assert language == "sql", (version, text[:60])
                    pglast.parse_sql(body)


def test_a_broken_body_would_be_caught() -> None:
    """The check above is not vacuous: an error inside a PL/pgSQL body fails to parse."""
    broken = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN SELEC 1; RETURN 1; END $$"
    pglast.parse_sql(broken)  # the outer statement alone is fine
    with pytest.raises(pglast.parser.ParseError):
        pglast.parse_plpgsql(broken)


def test_both_layouts_have_the_same_versions() -> None:
    assert [v for v, _ in available(Layout.PLAIN)] == [v for v, _ in available(Layout.TIMESCALE)]


def contract(layout: Layout) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Relations -> their columns (name and type, or name only for views), and functions ->
    their signature, as created by every migration of ``layout`` (the last definition wins)."""
    relations: dict[str, list[str]] = {}
    functions: dict[str, str] = {}
    for _, sql in available(layout):
        for stmt, _ in statements(sql):
            if isinstance(stmt, ast.CreateStmt):
                relations[stmt.relation.relname] = [
                    f"{c.colname} {RawStream()(c.typeName)}"
                    for c in stmt.tableElts
                    if isinstance(c, ast.ColumnDef)
                ]
            elif isinstance(stmt, ast.CreateTableAsStmt):  # materialized view (continuous aggregate)
                relations[stmt.into.rel.relname] = [
                    t.name or t.val.fields[-1].sval for t in stmt.query.targetList
                ]
            elif isinstance(stmt, ast.AlterTableStmt) and stmt.relation.relname in relations:
                relations[stmt.relation.relname] += [
                    f"{c.def_.colname} {RawStream()(c.def_.typeName)}"
                    for c in stmt.cmds
                    if c.subtype == pglast.enums.AlterTableType.AT_AddColumn
                ]
            elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None and stmt.newname:
                if stmt.renameType == pglast.enums.ObjectType.OBJECT_TABLE:
                    relations.pop(stmt.relation.relname, None)
            elif isinstance(stmt, ast.CreateFunctionStmt):
                name = stmt.funcname[-1].sval
                args = ", ".join(RawStream()(p) for p in stmt.parameters or ())
                returns = RawStream()(stmt.returnType) if stmt.returnType else "void"
                functions[name] = f"{name}({args}) -> {returns}"
    return relations, functions


def test_both_layouts_create_the_same_relations_columns_and_functions() -> None:
    plain_relations, plain_functions = contract(Layout.PLAIN)
    timescale_relations, timescale_functions = contract(Layout.TIMESCALE)
    for name in CONTRACT_FUNCTIONS:
        assert plain_functions[name] == timescale_functions[name]
    assert set(plain_relations) == set(timescale_relations)
    for name, columns in plain_relations.items():
        # Names and types: since 0014 no relation of the contract is a continuous aggregate.
        assert columns == timescale_relations[name], name
    assert {"events", "metric_series", "metric_points", "rollups_minute", "rollups_hour"} <= set(
        plain_relations
    )


def test_columns_added_later_are_part_of_the_contract() -> None:
    """ALTER TABLE ... ADD COLUMN counts: 0007 adds the events' kind and main_context."""
    relations, _ = contract(Layout.PLAIN)
    assert relations["events"][-2:] == ["kind text", "main_context boolean"]
    assert "attributes jsonb" in relations["sessions"]  # 0003's ADD COLUMNs on sessions


def test_tenant_views_are_recreated_after_their_table_gains_columns() -> None:
    """The TimescaleDB layout's tokentide_tenant views are ``SELECT *``, which PostgreSQL
    expands once, when the view is created: a column added to the table later is invisible to
    tenant roles unless the view is created again after it."""
    last_add: dict[str, tuple[int, int]] = {}
    last_view: dict[str, tuple[int, int]] = {}
    for n, (_, sql) in enumerate(available(Layout.TIMESCALE)):
        for i, (stmt, _) in enumerate(statements(sql)):
            if isinstance(stmt, ast.AlterTableStmt) and any(
                c.subtype == pglast.enums.AlterTableType.AT_AddColumn for c in stmt.cmds
            ):
                last_add[stmt.relation.relname] = (n, i)
            elif isinstance(stmt, ast.ViewStmt) and stmt.view.schemaname == "tokentide_tenant":
                last_view[stmt.view.relname] = (n, i)
    assert {"events", "metric_points", "rollups_minute", "rollups_hour"} <= set(last_view)
    for table, viewed in last_view.items():
        assert last_add.get(table, (-1, -1)) < viewed, table


def test_the_timescale_layout_uses_hypertables_compression_and_retention() -> None:
    sql = "\n".join(s for _, s in available(Layout.TIMESCALE))
    calls = {
        f.funcname[-1].sval
        for stmt, _ in statements(sql)
        if isinstance(stmt, ast.SelectStmt)
        for target in stmt.targetList or ()
        if isinstance(f := target.val, ast.FuncCall)
    }
    assert {"create_hypertable", "add_compression_policy"} <= calls
    assert "add_retention_policy" in sql  # kept in step with the sink's setting by tokentide_maintain


def test_rollups_hour_ends_as_the_same_table_in_both_layouts() -> None:
    """0004 made it a continuous aggregate in the TimescaleDB layout; 0014 replaced that with the
    plain layout's table and function (issue 15): the last statement creating it is a
    CREATE TABLE in both, and both define tokentide_rollup_hours with the same body."""

    def last(layout: Layout) -> tuple[type, str]:
        created: tuple[type, str] = (type(None), "")
        for _, sql in available(layout):
            for stmt, _ in statements(sql):
                if isinstance(stmt, ast.CreateStmt) and stmt.relation.relname == "rollups_hour":
                    created = (ast.CreateStmt, created[1])
                elif isinstance(stmt, ast.CreateTableAsStmt) and stmt.into.rel.relname == "rollups_hour":
                    created = (ast.CreateTableAsStmt, created[1])
                elif isinstance(stmt, ast.CreateFunctionStmt) and (
                    stmt.funcname[-1].sval == "tokentide_rollup_hours"
                ):
                    created = (created[0], " ".join(option(stmt, "as")[0].sval.split()))
        return created

    assert last(Layout.PLAIN)[0] is ast.CreateStmt
    assert last(Layout.TIMESCALE) == last(Layout.PLAIN)
