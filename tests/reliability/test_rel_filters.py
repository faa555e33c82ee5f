"""The filter language under property-based fuzzing: only FilterError escapes, and no input changes
the structure of the SQL it compiles to (injection attempts fail or match literally)."""

from __future__ import annotations

import re

import duckdb
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hotdog_dagster.core.search.filters import MAX_DEPTH, FilterError, compile_filter

pytestmark = pytest.mark.reliability

COLUMNS = {"id": "BIGINT", "caption": "VARCHAR", "score": "DOUBLE", "day": "DATE", "at": "TIMESTAMP", "ok": "BOOLEAN"}
ROWS = [
    (1, "a red circle", 0.5, "2024-01-02", "2024-01-02 03:04:05", True),
    (2, "x' OR 1=1 --", 0.9, "2024-05-31", "2024-05-31 12:00:00", False),
    (3, 'say "hi"; DROP TABLE t', 0.1, None, None, None),
    (4, "100% _match_ \\ back", None, "2023-12-31", "2023-12-31 23:59:59", True),
    (5, None, -1.0, "2020-02-29", "2020-02-29 00:00:00", False),
]

#: Every token the compiler may emit. Anything else in the SQL text came from the user.
_SQL_TOKEN = re.compile(
    r"""\s+|\(|\)|\?|,|'\\'|>=|<=|<>|!=|=|<|>|"(?:[^"]|"")*"|\b(?:AND|OR|NOT|IS|NULL|TRUE|FALSE|LIKE|ESCAPE|CAST|AS|VARCHAR)\b"""
)
_QUOTED = re.compile(r'"((?:[^"]|"")*)"')


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute('CREATE TABLE t (id BIGINT, caption VARCHAR, score DOUBLE, day DATE, "at" TIMESTAMP, ok BOOLEAN)')
    c.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", ROWS)
    return c


def _structure_is_ours(sql: str) -> None:
    """The SQL is made only of the compiler's tokens, and every identifier is a known column."""
    rest = _SQL_TOKEN.sub("", sql)
    assert rest == "", f"text in the SQL that the compiler does not write: {rest!r} in {sql!r}"
    for name in _QUOTED.findall(sql):
        assert name.replace('""', '"') in COLUMNS, f"identifier {name!r} is not a column"


def _check(con: duckdb.DuckDBPyConnection, text: str) -> None:
    try:
        sql, params = compile_filter(text, COLUMNS)
    except FilterError as err:
        assert str(err)  # a message, with or without a position
        return
    _structure_is_ours(sql)
    assert sql.count("?") == len(params)
    # The fragment runs, on its own and inside a larger WHERE, and never touches the table itself.
    con.execute(f"SELECT id FROM t WHERE {sql}", params).fetchall()
    con.execute(f"SELECT count(*) FROM t WHERE ({sql}) AND id > ?", [*params, 0]).fetchall()
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == len(ROWS)


_PIECES = st.sampled_from(
    [
        "id", "caption", "score", "day", "at", "ok", "Caption", "nope", ":", " ", "(", ")", "[", "]", "{", "}",
        "TO", "AND", "OR", "NOT", "&&", "||", "!", "+", "-", "*", "?", ">", ">=", "<", "<=", '"', "'", "\\",
        "1", "0.5", "-2", "1e309", "9" * 30, "2024-01-02", "2024-01-02T03:04:05", "true", "false",
        "x' OR 1=1 --", "'; DROP TABLE t; --", '" OR "1"="1', "%", "_", "\x00", "\n", "\t", "é", "\u202e",
        "/*", "*/", ";", "UNION SELECT", "\"id\"", "caption\\:x", "\udcff",
    ]
)  # fmt: skip


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_PIECES, max_size=24).map("".join))
def test_any_sequence_of_filter_pieces_is_an_error_or_safe_sql(con: duckdb.DuckDBPyConnection, text: str) -> None:
    _check(con, text)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80))
def test_any_text_at_all_is_an_error_or_safe_sql(con: duckdb.DuckDBPyConnection, text: str) -> None:
    _check(con, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40))
def test_a_quoted_value_matches_only_itself(con: duckdb.DuckDBPyConnection, value: str) -> None:
    """Whatever a quoted value holds (quotes, SQL, wildcards) it is compared as that literal text."""
    assume("\x00" not in value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(FilterError, match="not valid Unicode"):
            compile_filter(f'caption:"{value}"', COLUMNS)
        return
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    sql, params = compile_filter(f'caption:"{escaped}"', COLUMNS)
    _structure_is_ours(sql)
    assert params == [value]
    got = {r[0] for r in con.execute(f"SELECT id FROM t WHERE {sql}", params).fetchall()}
    assert got == {r[0] for r in ROWS if r[1] == value}


@pytest.mark.parametrize(
    "text",
    [
        'caption:"x\' OR 1=1 --"',
        "caption:'x\\' OR 1=1 --'",
        'caption:"say \\"hi\\"; DROP TABLE t"',
        "caption:100%*",
        "caption:*\\\\*",
    ],
)
def test_injection_attempts_match_literally(con: duckdb.DuckDBPyConnection, text: str) -> None:
    sql, params = compile_filter(text, COLUMNS)
    _structure_is_ours(sql)
    got = {r[0] for r in con.execute(f"SELECT id FROM t WHERE {sql}", params).fetchall()}
    assert len(got) <= 1 and con.execute("SELECT count(*) FROM t").fetchone()[0] == len(ROWS)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 5000 + "id:1" + ")" * 5000,
        "NOT " * 5000 + "id:1",
        "-" * 5000 + "id:1",
        "caption:(" + "(" * 3000 + "x" + ")" * 3000 + ")",
        "id:" + "9" * 5000,
        "id:[1 TO " + "9" * 5000 + "]",
        "caption:\ud800",
        " OR ".join(["id:1"] * 20000),
    ],
)
def test_pathological_filters_are_filter_errors_or_run(con: duckdb.DuckDBPyConnection, text: str) -> None:
    """Deep nesting used to escape as RecursionError, a 5000-digit integer as a plain ValueError."""
    _check(con, text)


def test_nesting_up_to_the_limit_still_parses() -> None:
    sql, params = compile_filter("(" * MAX_DEPTH + "id:1" + ")" * MAX_DEPTH, COLUMNS)
    assert params == [1] and '"id" = ?' in sql
    with pytest.raises(FilterError, match="nests more than"):
        compile_filter("(" * (MAX_DEPTH + 1) + "id:1" + ")" * (MAX_DEPTH + 1), COLUMNS)
