"""The filter language: parsing, error messages, and the SQL it produces run against a real DuckDB table."""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotdog_dagster.core.search.filters import (
    And,
    Exists,
    FilterError,
    Not,
    Or,
    Range,
    Term,
    columns_of,
    compile_filter,
    parse,
    to_sql,
)

COLUMNS = {
    "id": "INTEGER",
    "a_face": "DOUBLE",
    "source": "VARCHAR",
    "width": "INTEGER",
    "is_blank": "BOOLEAN",
    "prompt": "VARCHAR",
    "created": "TIMESTAMP",
    "day": "DATE",
}

INJECTION = "x' OR 1=1 --"
ROWS = [
    # id, a_face, source, width, is_blank, prompt, created, day
    (1, 0.10, "sketch", 256, False, "one hot dog", dt.datetime(2024, 1, 1, 10), dt.date(2024, 1, 1)),
    (2, 0.58, "sketch", 512, False, "a face", dt.datetime(2024, 1, 2, 12), dt.date(2024, 1, 2)),
    (3, 0.75, "diffusion", 512, True, "two hot dogs", dt.datetime(2024, 1, 3, 8), dt.date(2024, 1, 3)),
    (4, 0.99, "folder", 1024, False, '100% _real_ "quoted"', dt.datetime(2024, 2, 1), dt.date(2024, 2, 1)),
    (5, None, "Sketch", None, None, None, None, None),
    (6, -0.5, INJECTION, 64, False, "it's", dt.datetime(2023, 12, 31, 23, 59), dt.date(2023, 12, 31)),
    (7, 1e-3, "sketch", 0, False, "hot*dog?", dt.datetime(2024, 1, 1), dt.date(2024, 1, 1)),
]
ALL_IDS = {row[0] for row in ROWS}


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE images (id INTEGER, a_face DOUBLE, source VARCHAR, width INTEGER, is_blank BOOLEAN, "
        "prompt VARCHAR, created TIMESTAMP, day DATE, vec FLOAT[3], tags VARCHAR[], meta STRUCT(k INTEGER))"
    )
    con.executemany(
        "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, [1, 2, 3], ['a'], {'k': 1})",
        [list(row) for row in ROWS],
    )
    con.execute("CREATE VIEW clean_images AS SELECT * FROM images")
    return con


def select(con: duckdb.DuckDBPyConnection, text: str) -> set[int]:
    where, params = compile_filter(text, COLUMNS)
    return {row[0] for row in con.execute(f"SELECT id FROM images WHERE {where}", params).fetchall()}


def error_of(text: str, columns: dict[str, str] | None = None) -> FilterError:
    with pytest.raises(FilterError) as info:
        if columns is None:
            parse(text)
        else:
            compile_filter(text, columns)
    return info.value


# ----------------------------------------------------------------------------------------------
# Parsing: every construct
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("source:sketch", Term("source", "=", "sketch")),
        ("a_face:0.5", Term("a_face", "=", "0.5")),
        ("a_face:-0.5", Term("a_face", "=", "-0.5")),
        ("a_face:1e-3", Term("a_face", "=", "1e-3")),
        ('prompt:"two hot dogs"', Term("prompt", "=", "two hot dogs")),
        ("prompt:'two hot dogs'", Term("prompt", "=", "two hot dogs")),
        (r'prompt:"say \"hi\" \\ bye"', Term("prompt", "=", 'say "hi" \\ bye')),
        (r"prompt:'it\'s'", Term("prompt", "=", "it's")),
        ("prompt:it's", Term("prompt", "=", "it's")),
        ('prompt:""', Term("prompt", "=", "")),
        ("path:/data/a:b.png", Term("path", "=", "/data/a:b.png")),
        (r"prompt:two\ dogs", Term("prompt", "=", "two dogs")),
        ("source:AND", Term("source", "=", "AND")),
        ("source: sketch", Term("source", "=", "sketch")),
        ("a_face:[0.58 TO 0.99]", Range("a_face", "0.58", "0.99", True, True)),
        ("a_face:{0.58 TO 0.99}", Range("a_face", "0.58", "0.99", False, False)),
        ("a_face:[0.58 TO 0.99}", Range("a_face", "0.58", "0.99", True, False)),
        ("a_face:{0.58 to 0.99]", Range("a_face", "0.58", "0.99", False, True)),
        ("a_face:[* TO 0.5]", Range("a_face", None, "0.5", True, True)),
        ("a_face:[0.5 TO *]", Range("a_face", "0.5", None, True, True)),
        ("a_face:[* TO *]", Range("a_face", None, None, True, True)),
        ("a_face:[-1 TO -0.5]", Range("a_face", "-1", "-0.5", True, True)),
        ('created:["2024-01-01 10:00" TO 2024-02-01T00:00]', Range("created", "2024-01-01 10:00", "2024-02-01T00:00")),
        ('source:["*" TO b]', Range("source", "*", "b")),
        ("a_face:>0.5", Term("a_face", ">", "0.5")),
        ("a_face:>=0.5", Term("a_face", ">=", "0.5")),
        ("a_face:<0.5", Term("a_face", "<", "0.5")),
        ("a_face:<=-0.5", Term("a_face", "<=", "-0.5")),
        ("a_face:> 0.5", Term("a_face", ">", "0.5")),
        ("is_blank:true", Term("is_blank", "=", "true")),
        ("a_face:*", Exists("a_face")),
        ('source:"*"', Term("source", "=", "*")),
        (r"source:\*", Term("source", "=", "*")),
        ("source:sk*", Term("source", "like", "sk*")),
        ("source:sk?tch", Term("source", "like", "sk?tch")),
        (r"prompt:hot\*dog*", Term("prompt", "like", r"hot\*dog*")),
        (r"prompt:*\(1\)*", Term("prompt", "like", "*(1)*")),
        ("prompt:100%*", Term("prompt", "like", "100%*")),
    ],
)
def test_parse_clauses(text: str, tree: object) -> None:
    assert parse(text) == tree


S, D, B = Term("source", "=", "s"), Term("source", "=", "d"), Term("is_blank", "=", "true")


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("source:s AND source:d", And((S, D))),
        ("source:s and source:d", And((S, D))),
        ("source:s && source:d", And((S, D))),
        ("source:s source:d", And((S, D))),  # implicit AND
        ("source:s OR source:d", Or((S, D))),
        ("source:s or source:d", Or((S, D))),
        ("source:s || source:d", Or((S, D))),
        ("NOT source:s", Not(S)),
        ("not source:s", Not(S)),
        ("!source:s", Not(S)),
        ("-source:s", Not(S)),
        ("NOT NOT source:s", Not(Not(S))),
        ("source:s -source:d", And((S, Not(D)))),
        # precedence: NOT > AND > OR
        ("source:s OR source:d AND is_blank:true", Or((S, And((D, B))))),
        ("source:s AND source:d OR is_blank:true", Or((And((S, D)), B))),
        ("source:s OR source:d is_blank:true", Or((S, And((D, B))))),
        ("NOT source:s AND source:d", And((Not(S), D))),
        ("NOT source:s OR source:d", Or((Not(S), D))),
        ("source:s AND source:d AND is_blank:true", And((S, D, B))),
        ("source:s OR source:d OR is_blank:true", Or((S, D, B))),
        # parentheses group, and a group stays a child
        ("(source:s OR source:d) AND is_blank:true", And((Or((S, D)), B))),
        ("NOT (source:s OR source:d)", Not(Or((S, D)))),
        ("(source:s AND source:d) AND is_blank:true", And((And((S, D)), B))),
        ("((source:s))", S),
        ("(source:s)(source:d)", And((S, D))),
        ("  source:s\n\tAND\nsource:d  ", And((S, D))),
    ],
)
def test_parse_boolean_structure(text: str, tree: object) -> None:
    assert parse(text) == tree


@pytest.mark.parametrize(
    "text",
    [
        "a_face:[0.58 TO 0.99] AND source:sketch",
        '(source:diffusion OR source:sketch) NOT is_blank:true prompt:"two hot dogs"',
        r'prompt:"say \"hi\"" OR prompt:*\(x\)* OR prompt:"a\\b"',
        "a_face:{* TO 0.5] OR width:>=512 OR NOT created:*",
        "NOT (source:a OR (source:b AND source:c)) AND ((source:d))",
    ],
)
def test_to_text_reparses_to_the_same_tree(text: str) -> None:
    tree = parse(text)
    assert parse(tree.to_text()) == tree


def test_nodes_remember_positions_but_compare_without_them() -> None:
    tree = parse("source:s AND  a_face:[0.1 TO 0.2]")
    assert isinstance(tree, And)
    term, rng = tree.children
    assert (term.pos, term.value_pos) == (0, 7)
    assert (rng.pos, rng.low_pos, rng.high_pos) == (14, 22, 29)
    assert term == Term("source", "=", "s")


# ----------------------------------------------------------------------------------------------
# Errors: position, caret and what was expected
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("a_face:[0.5 TO", 14, "expected a range end (a value or *), found end of filter"),
        ("a_face:[0.5 0.9]", 12, "expected TO between the two ends of the range, found '0.9'"),
        ("a_face:[0.5 TO 0.9", 18, "expected ']' or '}' to close the range opened at position 7"),
        ("a_face:[0.5 TO 0.9)", 18, "expected ']' or '}'"),
        ("a_face:[", 8, "expected a range end"),
        ("a_face:[ab* TO 1]", 8, "a range end cannot be a wildcard"),
        ("(source:x", 9, "expected ')' to close the '(' at position 0, found end of filter"),
        ("((source:x) OR source:y", 23, "expected ')' to close the '(' at position 0"),
        ("source:x)", 8, "unbalanced ')'"),
        ("source:x AND", 12, "expected a clause (field:value), NOT or '(', found end of filter"),
        ("source:x OR", 11, "expected a clause"),
        ("AND source:x", 0, "expected a clause (field:value), NOT or '(', found 'AND'"),
        ("NOT", 3, "expected a clause"),
        ("()", 1, "found ')'"),
        ("source", 6, "expected ':' after the field name 'source' (clauses are field:value), found end of filter"),
        ("hot dog", 4, "expected ':' after the field name 'hot'"),
        ("source:", 7, "expected a value, '*', a range [a TO b] or a comparison (>, >=, <, <=) after 'source:'"),
        ("source:)", 7, "expected a value"),
        ("a_face:>", 8, "expected a value after '>', found end of filter"),
        ("a_face:>=*", 9, "expected a value after '>='"),
        ('source:"abc', 7, 'unterminated quoted value: expected a closing "'),
        ("source:'abc", 7, "unterminated quoted value: expected a closing '"),
        ("source:x\\", 9, "expected a character after the escaping backslash"),
        ('source:x "y"', 9, "expected AND, OR, NOT, a clause (field:value) or the end of the filter, found '\"y\"'"),
        ("source:x ]", 9, "found ']'"),
    ],
)
def test_syntax_errors_name_position_and_expectation(text: str, position: int, expected: str) -> None:
    err = error_of(text)
    assert err.position == position
    assert expected in err.message
    shown = str(err)
    assert shown.startswith(f"invalid filter at position {position}: ")
    first, filter_line, caret_line = shown.split("\n")
    assert filter_line == "  " + text
    assert caret_line == "  " + " " * position + "^"
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_filter_is_an_error(text: str) -> None:
    err = error_of(text)
    assert err.position is None
    assert "empty" in str(err)


def test_caret_stays_in_column_with_newlines_and_tabs() -> None:
    err = error_of("source:x\n\tAND")
    assert str(err).splitlines()[1:] == ["  source:x  AND", "  " + " " * 13 + "^"]


def test_unknown_field_lists_fields_and_suggests_the_closest() -> None:
    err = error_of("source:x AND a_fase:[0.5 TO 1]", COLUMNS)
    assert err.position == 13
    assert "unknown field 'a_fase' (did you mean 'a_face'?)" in err.message
    assert "the fields are: a_face, created, day, id, is_blank, prompt, source, width" in err.message
    assert str(err).splitlines()[-1] == "  " + " " * 13 + "^"


def test_unknown_field_without_a_close_match_still_lists_fields() -> None:
    err = error_of("zzzzzz:1", COLUMNS)
    assert "did you mean" not in err.message
    assert "the fields are: a_face," in err.message


def test_field_names_match_case_insensitively_and_sql_uses_the_known_spelling() -> None:
    where, params = compile_filter("A_FACE:>0.5", COLUMNS)
    assert where == '"a_face" > ?'
    assert params == [0.5]


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("a_face:abc", 7, "field 'a_face' is DOUBLE: expected a number, got 'abc'"),
        ("a_face:[0.1 TO abc]", 15, "expected a number, got 'abc'"),
        ("a_face:[abc TO 1]", 8, "expected a number, got 'abc'"),
        ("a_face:>nan", 8, "expected a number, got 'nan'"),
        ("width:1.2.3", 6, "field 'width' is INTEGER: expected a number"),
        ("is_blank:maybe", 9, "field 'is_blank' is BOOLEAN: expected true or false, got 'maybe'"),
        ("day:yesterday", 4, "field 'day' is DATE: expected a date like 2024-05-31"),
        ("created:>noon", 9, "field 'created' is TIMESTAMP: expected a timestamp"),
        ("source:[a TO b]", 0, "field 'source' is VARCHAR: ranges need a numeric, date or timestamp field"),
        ("source:>a", 0, "field 'source' is VARCHAR: comparisons (>, >=, <, <=) need a numeric"),
        ("is_blank:[* TO true]", 0, "field 'is_blank' is BOOLEAN: ranges need"),
        ("width:5*", 6, "field 'width' is INTEGER: wildcards (* and ?) only work on text fields"),
        ("vec:1", 0, "field 'vec' has type FLOAT[3], which a filter cannot compare"),
    ],
)
def test_type_errors_name_field_value_and_type(text: str, position: int, expected: str) -> None:
    err = error_of(text, {**COLUMNS, "vec": "FLOAT[3]"})
    assert err.position == position
    assert expected in err.message


def test_to_sql_errors_have_positions_but_no_caret_without_text() -> None:
    with pytest.raises(FilterError) as info:
        to_sql(parse("a_face:abc"), COLUMNS)
    assert info.value.position == 7
    assert "\n" not in str(info.value)


def test_hand_built_trees_compile_too() -> None:
    tree = And((Range("a_face", "0.5", None, False, True), Not(Exists("prompt"))))
    assert to_sql(tree, COLUMNS) == ('("a_face" > ? AND "prompt" IS NULL)', [0.5])
    with pytest.raises(FilterError, match="unknown field 'nope'"):
        to_sql(Term("nope", "=", "1"), COLUMNS)


# ----------------------------------------------------------------------------------------------
# SQL: parameters, coercion, and the rows it selects
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sql", "params"),
    [
        ("source:sketch", '"source" = ?', ["sketch"]),
        ("a_face:[0.58 TO 0.99]", '("a_face" >= ? AND "a_face" <= ?)', [0.58, 0.99]),
        ("a_face:{0 TO 1}", '("a_face" > ? AND "a_face" < ?)', [0.0, 1.0]),
        ("a_face:[* TO *]", '"a_face" IS NOT NULL', []),
        ("width:1e3", '"width" = ?', [1000]),
        ("width:-7", '"width" = ?', [-7]),
        ("width:>2.5", '"width" > ?', [2.5]),
        ("a_face:-1.5E-2", '"a_face" = ?', [-0.015]),
        ("a_face:.5", '"a_face" = ?', [0.5]),
        ("is_blank:TRUE", '"is_blank" = ?', [True]),
        ("is_blank:false", '"is_blank" = ?', [False]),
        ("day:2024-01-02", '"day" = ?', [dt.date(2024, 1, 2)]),
        ("created:>=2024-01-02T12:00", '"created" >= ?', [dt.datetime(2024, 1, 2, 12)]),
        ("NOT source:x", '(("source" = ?) IS NOT TRUE)', ["x"]),
        ("NOT prompt:*", '"prompt" IS NULL', []),
        ("source:a OR source:b width:1", '("source" = ? OR ("source" = ? AND "width" = ?))', ["a", "b", 1]),
        ("prompt:100%_*", "CAST(\"prompt\" AS VARCHAR) LIKE ? ESCAPE '\\'", ["100\\%\\_%"]),
        (r"prompt:a\*b?\\*", "CAST(\"prompt\" AS VARCHAR) LIKE ? ESCAPE '\\'", ["a*b_\\\\%"]),
    ],
)
def test_sql_and_parameters(text: str, sql: str, params: list) -> None:
    assert compile_filter(text, COLUMNS) == (sql, params)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("source:sketch", {1, 2, 7}),  # exact and case-sensitive: "Sketch" (5) is not selected
        ("source:Sketch", {5}),
        ("a_face:[0.58 TO 0.99]", {2, 3, 4}),
        ("a_face:{0.58 TO 0.99}", {3}),
        ("a_face:[0.58 TO 0.99}", {2, 3}),
        ("a_face:{0.58 TO 0.99]", {3, 4}),
        ("a_face:[* TO 0.1]", {1, 6, 7}),
        ("a_face:[0.75 TO *]", {3, 4}),
        ("a_face:[* TO *]", ALL_IDS - {5}),
        ("a_face:>0.58", {3, 4}),
        ("a_face:>=0.58", {2, 3, 4}),
        ("a_face:<0", {6}),
        ("a_face:<=1e-3", {6, 7}),
        ("a_face:-0.5", {6}),
        ("a_face:0.001", {7}),
        ("width:512", {2, 3}),
        ("width:[0 TO 256]", {1, 6, 7}),
        ("width:5.12e2", {2, 3}),
        ("is_blank:true", {3}),
        ("is_blank:false", {1, 2, 4, 6, 7}),
        ("NOT is_blank:true", {1, 2, 4, 5, 6, 7}),  # NULL counts as "not true"
        ("is_blank:*", ALL_IDS - {5}),
        ("NOT is_blank:*", {5}),
        ("-a_face:[0 TO 1]", {5, 6}),
        ('prompt:"two hot dogs"', {3}),
        ('prompt:"100% _real_ \\"quoted\\""', {4}),
        ("prompt:it's", {6}),
        ("prompt:*hot*", {1, 3, 7}),
        ("prompt:*dog", {1}),
        ("prompt:*dog?", {3, 7}),  # ? is any one character: "dogs" and "dog?"
        ("prompt:*dog*", {1, 3, 7}),
        (r"prompt:hot\*dog\?", {7}),  # escaped: literal * and ?
        ("prompt:100%*", {4}),  # % is literal, not LIKE's wildcard
        ("prompt:1_0*", set()),  # _ is literal too
        ("prompt:*_real_*", {4}),
        ("source:SK*", set()),  # wildcards are case-sensitive like equality
        ("day:2024-01-01", {1, 7}),
        ("day:[2024-01-01 TO 2024-01-02]", {1, 2, 7}),
        ("created:[2024-01-01 TO 2024-01-02}", {1, 7}),
        ('created:>"2024-01-02 11:59:59"', {2, 3, 4}),
        ("source:sketch AND a_face:>0.05", {1, 2}),
        ("source:sketch a_face:>0.05", {1, 2}),
        ("source:folder OR source:diffusion", {3, 4}),
        ("source:folder OR source:sketch a_face:<0.2", {1, 4, 7}),
        ("(source:folder OR source:sketch) a_face:<0.2", {1, 7}),
        ("NOT (source:folder OR source:sketch)", {3, 5, 6}),
        ("NOT source:sketch AND width:512", {3}),
        ("!source:sketch && width:>=512 || id:6", {3, 4, 6}),
        ("NOT NOT source:sketch", {1, 2, 7}),
        ("id:[2 TO 4] -id:3", {2, 4}),
        (f'source:"{INJECTION}"', {6}),  # the injection string is data, matched exactly
        ("width:>99999999999999999999999999999999999999999999", set()),  # beyond any integer type: no SQL error
        ("width:<1e400", ALL_IDS - {5}),
        ("id:[-1e999 TO 2.5]", {1, 2}),
        ("a_face:>-1e999", ALL_IDS - {5}),
    ],
)
def test_selected_rows(con: duckdb.DuckDBPyConnection, text: str, ids: set[int]) -> None:
    assert select(con, text) == ids


@pytest.mark.parametrize(
    "text",
    [
        'source:"x\' OR 1=1 --" AND id:1',
        "source:\"' OR ''='\"",
        'source:"sketch\'; DROP TABLE images; --"',
        'source:"\\"; DROP TABLE images; --"',
        "prompt:\"') OR TRUE OR ('\"",
        "source:x'--",
        'prompt:"*\'*\\" OR 1=1 --"',
        "prompt:*%'*",
    ],
)
def test_injection_values_are_inert(con: duckdb.DuckDBPyConnection, text: str) -> None:
    assert select(con, text) == set()
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(ROWS)


@pytest.mark.parametrize(
    "text",
    [
        'so"urce:x',
        "source;DROP TABLE images:x",
        "source--:x",
        "1=1 OR source:x",
        '"source":x',
        "source) OR (1=1:x",
        "a_face:[0 TO 1]; DROP TABLE images",
        "source:x OR 1=1",
        "`source`:x",
        "source/**/:x",
        "source:'x'' OR 1=1'",
        "prompt:*'*\" OR 1=1 --",
    ],
)
def test_injection_through_field_names_or_stray_quotes_is_a_filter_error(
    con: duckdb.DuckDBPyConnection, text: str
) -> None:
    with pytest.raises(FilterError):
        compile_filter(text, COLUMNS)
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(ROWS)


def test_no_user_text_in_sql(con: duckdb.DuckDBPyConnection) -> None:
    text = 'prompt:"evil\'\\"; --" OR source:evil* OR a_face:[0.1 TO 0.2]'
    where, params = compile_filter(text, COLUMNS)
    assert "evil" not in where
    assert "0.1" not in where
    assert where.count("?") == len(params) == 4


def test_combines_safely_with_more_conditions(con: duckdb.DuckDBPyConnection) -> None:
    where, params = compile_filter("source:folder OR source:sketch", COLUMNS)
    rows = con.execute(f"SELECT id FROM images WHERE {where} AND id > ?", [*params, 2]).fetchall()
    assert {row[0] for row in rows} == {4, 7}


# ----------------------------------------------------------------------------------------------
# columns_of
# ----------------------------------------------------------------------------------------------


def test_columns_of_reads_describe_and_skips_vectors(con: duckdb.DuckDBPyConnection) -> None:
    assert columns_of(con, "clean_images") == COLUMNS
    assert list(columns_of(con, "images")) == list(COLUMNS)


def test_columns_of_keeps_scalar_types_and_drops_the_rest() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t (i TINYINT, u UBIGINT, h HUGEINT, f FLOAT, d DECIMAL(10, 2), s VARCHAR, "
        "e ENUM('a', 'b'), b BOOLEAN, dd DATE, ts TIMESTAMP, tz TIMESTAMPTZ, "
        "v FLOAT[4], l INTEGER[], st STRUCT(x INTEGER), m MAP(VARCHAR, INTEGER), bl BLOB, tm TIME, j JSON)"
    )
    cols = columns_of(con, "t")
    assert list(cols) == ["i", "u", "h", "f", "d", "s", "e", "b", "dd", "ts", "tz"]
    con.execute(
        "INSERT INTO t (i, d, e, tz) VALUES (1, 2.50, 'a', TIMESTAMPTZ '2024-01-01 00:00:00+00'), (2, 3.75, 'b', NULL)"
    )
    for text, expected in [("i:1", [1]), ("d:[2.5 TO 3]", [1]), ("e:b", [2]), ("e:a*", [1]), ("tz:*", [1])]:
        where, params = compile_filter(text, cols)
        assert [row[0] for row in con.execute(f"SELECT i FROM t WHERE {where}", params).fetchall()] == expected


# ----------------------------------------------------------------------------------------------
# Properties: printing round-trips; SQL agrees with a Python reference evaluator
# ----------------------------------------------------------------------------------------------

FIELD_VALUES = {
    "a_face": st.sampled_from(["0.1", "0.58", "0.75", "0.99", "-0.5", "1e-3", "0", "1", "-1.5e1", ".5"]),
    "width": st.sampled_from(["0", "64", "256", "512", "1024", "300", "5.12e2"]),
    "id": st.sampled_from(["1", "3", "5", "7", "-2"]),
    "day": st.sampled_from(["2023-12-31", "2024-01-01", "2024-01-02", "2024-02-01"]),
    "created": st.sampled_from(["2024-01-01", "2024-01-02T12:00:00", "2023-12-31 23:59", "2024-01-03T08:00"]),
}
TEXT_VALUES = st.one_of(
    st.sampled_from(["sketch", "Sketch", "folder", "diffusion", INJECTION, "two hot dogs", "it's", "hot*dog?"]),
    st.text(max_size=8),
)
ORDERED = sorted(FIELD_VALUES)


def _glob(parts: list[str]) -> str:
    return "".join(p if p in ("*", "?") else re.sub(r"([*?\\])", r"\\\1", p) for p in parts)


PATTERNS = (
    st.lists(st.one_of(st.sampled_from(["*", "?"]), st.text(min_size=1, max_size=4)), min_size=1, max_size=4)
    .filter(lambda parts: "*" in parts or "?" in parts)
    .map(_glob)
    .filter(lambda glob: glob != "*")
)


def _ordered_leaf(name: str) -> st.SearchStrategy:
    values = FIELD_VALUES[name]
    bound = st.one_of(st.none(), values)
    return st.one_of(
        st.builds(Term, st.just(name), st.sampled_from(["=", ">", ">=", "<", "<="]), values),
        st.builds(Range, st.just(name), bound, bound, st.booleans(), st.booleans()),
    )


LEAVES = st.one_of(
    *[_ordered_leaf(name) for name in ORDERED],
    st.builds(Term, st.sampled_from(["source", "prompt"]), st.just("="), TEXT_VALUES),
    st.builds(Term, st.sampled_from(["source", "prompt"]), st.just("like"), PATTERNS),
    st.builds(Term, st.just("is_blank"), st.just("="), st.sampled_from(["true", "false", "TRUE"])),
    st.builds(Exists, st.sampled_from(sorted(COLUMNS))),
)
TREES = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.builds(Not, kids),
        st.builds(And, st.lists(kids, min_size=2, max_size=3).map(tuple)),
        st.builds(Or, st.lists(kids, min_size=2, max_size=3).map(tuple)),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(TREES)
def test_printed_trees_parse_back_to_themselves(tree: object) -> None:
    assert parse(tree.to_text()) == tree


def _py_value(name: str, text: str) -> object:
    kind = COLUMNS[name]
    if kind == "INTEGER" or kind == "DOUBLE":
        return float(text)
    if kind == "BOOLEAN":
        return text.lower() == "true"
    if kind == "DATE":
        return dt.date.fromisoformat(text)
    if kind == "TIMESTAMP":
        return dt.datetime.fromisoformat(text)
    return text


def _glob_regex(glob: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(glob):
        if glob[i] == "\\":
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        out.append({"*": ".*", "?": "."}.get(glob[i], re.escape(glob[i])))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _holds(node: object, row: dict[str, object]) -> bool:
    """The language's meaning, written plainly: a clause on a missing value is false; NOT is the complement."""
    if isinstance(node, And):
        return all(_holds(child, row) for child in node.children)
    if isinstance(node, Or):
        return any(_holds(child, row) for child in node.children)
    if isinstance(node, Not):
        return not _holds(node.child, row)
    value = row[node.field]
    if value is None:
        return False
    if isinstance(node, Exists):
        return True
    if isinstance(node, Range):
        low = None if node.low is None else _py_value(node.field, node.low)
        high = None if node.high is None else _py_value(node.field, node.high)
        above = low is None or (value >= low if node.low_inclusive else value > low)
        below = high is None or (value <= high if node.high_inclusive else value < high)
        return above and below
    if node.op == "like":
        return _glob_regex(node.value).fullmatch(value) is not None
    other = _py_value(node.field, node.value)
    return {
        "=": value == other,
        ">": value > other,
        ">=": value >= other,
        "<": value < other,
        "<=": value <= other,
    }[node.op]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(TREES)
def test_sql_selects_what_the_reference_evaluator_selects(con: duckdb.DuckDBPyConnection, tree: object) -> None:
    names = list(COLUMNS)
    rows = [dict(zip(names, row, strict=True)) for row in ROWS]
    expected = {row["id"] for row in rows if _holds(tree, row)}
    where, params = to_sql(tree, COLUMNS)
    assert {row[0] for row in con.execute(f"SELECT id FROM images WHERE {where}", params).fetchall()} == expected
    negated, neg_params = to_sql(Not(tree), COLUMNS)
    got = {row[0] for row in con.execute(f"SELECT id FROM images WHERE {negated}", neg_params).fetchall()}
    assert got == ALL_IDS - expected


FUZZ_TOKENS = st.sampled_from(
    [
        *COLUMNS,
        "vec",
        "nope",
        ":",
        " ",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "*",
        "?",
        "TO",
        "AND",
        "or",
        "NOT",
        "-",
        "!",
        "&&",
        "||",
        ">",
        ">=",
        "<",
        "<=",
        '"',
        "'",
        "\\",
        "0.5",
        "-1e3",
        "512",
        "true",
        "2024-01-01",
        "sketch",
        "%",
        "_",
        ";",
        "--",
        "1=1",
        "DROP TABLE images",
        "+",
        "source:(",
        "a_face:(",
        "\\-",
        "\\:",
    ]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.lists(FUZZ_TOKENS, max_size=12).map("".join), st.text(max_size=20)))
def test_any_text_is_a_filter_error_or_sql_that_runs(con: duckdb.DuckDBPyConnection, text: str) -> None:
    try:
        where, params = compile_filter(text, COLUMNS)
    except FilterError as err:
        assert err.message
        assert err.position is None or 0 <= err.position <= len(text)
        return
    assert where.count("?") == len(params)
    con.execute(f"SELECT count(*) FROM images WHERE {where}", params).fetchall()
    assert con.execute("SELECT count(*) FROM images").fetchone()[0] == len(ROWS)


# ----------------------------------------------------------------------------------------------
# Lucene field grouping, + / - prefixes and escapes
# ----------------------------------------------------------------------------------------------

SK, FO = Term("source", "=", "sketch"), Term("source", "=", "folder")


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("source:(sketch OR folder)", Or((SK, FO))),
        ("source:(sketch folder)", Or((SK, FO))),  # inside a group the default operator is OR
        ("source:( sketch || folder )", Or((SK, FO))),
        ("source:(sketch AND folder)", And((SK, FO))),
        ("source:(+sketch +folder)", And((SK, FO))),
        ("source:(sketch -folder)", And((SK, Not(FO)))),
        ("source:(-folder sketch)", And((Not(FO), SK))),
        ("source:(!folder)", Not(FO)),
        ("source:(NOT folder)", Not(FO)),
        ("source:(+sketch a b)", And((SK, Or((Term("source", "=", "a"), Term("source", "=", "b")))))),
        ("source:(a b AND sketch)", And((Or((Term("source", "=", "a"), Term("source", "=", "b"))), SK))),
        ("source:(a OR b sketch)", Or((Term("source", "=", "a"), Or((Term("source", "=", "b"), SK))))),
        ("source:((sketch))", SK),
        ("source:((sketch folder) x)", Or((Or((SK, FO)), Term("source", "=", "x")))),
        ('prompt:("two hot dogs" hot*)', Or((Term("prompt", "=", "two hot dogs"), Term("prompt", "like", "hot*")))),
        ("a_face:([0 TO 0.1] >0.9)", Or((Range("a_face", "0", "0.1"), Term("a_face", ">", "0.9")))),
        ("a_face:(-0.5 OR .5)", Or((Term("a_face", "=", "-0.5"), Term("a_face", "=", ".5")))),  # a number
        ("a_face:(-.5)", Term("a_face", "=", "-.5")),
        ("a_face:(--0.5)", Not(Term("a_face", "=", "-0.5"))),
        ("a_face:(* -[0 TO 1])", And((Exists("a_face"), Not(Range("a_face", "0", "1"))))),
        (
            r"source:(\-x \AND \+y)",
            Or((Term("source", "=", "-x"), Term("source", "=", "AND"), Term("source", "=", "+y"))),
        ),
        ('source:("AND" "OR")', Or((Term("source", "=", "AND"), Term("source", "=", "OR")))),
        ("source:(a:b)", Term("source", "=", "a:b")),
        ("-source:(sketch folder)", Not(Or((SK, FO)))),
        ("+source:(sketch folder) -is_blank:true", And((Or((SK, FO)), Not(Term("is_blank", "=", "true"))))),
        ("+source:sketch", SK),
        ("+source:sketch +is_blank:true", And((SK, Term("is_blank", "=", "true")))),
        ("NOT +source:sketch", Not(SK)),
        ("source:+1", Term("source", "=", "+1")),  # after ':' a + belongs to the value
        (r"odd\:name:1", Term("odd:name", "=", "1")),
        (r"my\ field:x", Term("my field", "=", "x")),
        (r"\AND:x", Term("AND", "=", "x")),
        (r"\-x:1", Term("-x", "=", "1")),
        (r"source_name:img\(1\).png", Term("source_name", "=", "img(1).png")),
        (r"prompt:\+\-\&\&\|\|\!\^\~\:\/", Term("prompt", "=", "+-&&||!^~:/")),
    ],
)
def test_parse_groups_prefixes_and_escapes(text: str, tree: object) -> None:
    assert parse(text) == tree
    assert parse(tree.to_text()) == tree


def test_group_terms_point_at_the_field_and_their_own_value() -> None:
    tree = parse("a_face:(0.1 abc)")
    first, second = tree.children
    assert (first.pos, first.value_pos) == (0, 8)
    assert (second.pos, second.value_pos) == (0, 12)
    err = error_of("a_face:(0.1 abc)", COLUMNS)
    assert err.position == 12 and "expected a number, got 'abc'" in err.message
    err = error_of("nope:(a b)", COLUMNS)
    assert err.position == 0 and "unknown field 'nope'" in err.message


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        (
            "source:()",
            8,
            "expected a value, '*', a range [a TO b], a comparison (>, >=, <, <=) or '(' in the group of 'source', found ')'",
        ),
        ("source:(a", 9, "expected ')' to close the group of 'source' opened at position 7, found end of filter"),
        ("source:(a ]", 10, "expected ')' to close the group of 'source' opened at position 7, found ']'"),
        ("source:(a OR)", 12, "in the group of 'source', found ')'"),
        ("source:(a AND)", 13, "in the group of 'source'"),
        ("source:(+)", 9, "in the group of 'source', found ')'"),
        ("source:(a -)", 11, "in the group of 'source'"),
        ("source:((a)", 11, "expected ')' to close the group of 'source' opened at position 7"),
        ("a_face:([0 TO 1)", 15, "expected ']' or '}' to close the range opened at position 8"),
        ("a_face:(>)", 9, "expected a value after '>', found ')'"),
        ('source:("a)', 8, "unterminated quoted value"),
        ("source:(a\\", 10, "expected a character after the escaping backslash"),
        ("+", 1, "expected a clause (field:value), NOT or '(', found end of filter"),
        ("source:x +", 10, "expected a clause"),
        ("odd\\", 4, "expected a character after the escaping backslash"),
        ("source:x) OR source:(y)", 8, "unbalanced ')'"),
    ],
)
def test_group_and_prefix_errors_name_position_and_expectation(text: str, position: int, expected: str) -> None:
    err = error_of(text)
    assert err.position == position
    assert expected in err.message
    assert str(err).splitlines()[-1] == "  " + " " * position + "^"


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("source:(sketch OR folder)", {1, 2, 4, 7}),
        ("source:(sketch folder)", {1, 2, 4, 7}),
        ("source:(sketch AND folder)", set()),
        ("source:(sk* -sketch)", set()),
        ("source:(*ketch -sketch)", {5}),
        ("prompt:(+*hot* +*dog?)", {3, 7}),
        ("prompt:(*hot* *face*) -prompt:*dogs*", {1, 2, 7}),
        ("prompt:(*hot* *face* -*dogs*)", {1, 2, 7}),
        ("a_face:([0 TO 0.1] >0.9)", {1, 4, 7}),
        ("a_face:(-0.5 OR 0.75)", {3, 6}),
        ("a_face:(* -[0 TO 1])", {6}),
        ("width:(512 1024) +source:sketch", {2}),
        ("-source:(sketch folder)", {3, 5, 6}),
        ("+id:[1 TO 4] -id:(2 3)", {1, 4}),
        ("NOT is_blank:(true)", {1, 2, 4, 5, 6, 7}),
        (rf'source:("{INJECTION}" sketch)', {1, 2, 6, 7}),
        (r"prompt:(hot\*dog\? it\'s)", {6, 7}),
    ],
)
def test_groups_select_rows(con: duckdb.DuckDBPyConnection, text: str, ids: set[int]) -> None:
    assert select(con, text) == ids


def _rhs_text(leaf: object, escape_style: str) -> str:
    """A leaf's right-hand side as it may stand inside its field's group."""
    text = leaf.to_text()[len(leaf.field) + 1 :]
    if isinstance(leaf, Term) and leaf.op == "=" and not text.startswith('"'):
        lead, rest = text[:1], text[1:]
        risky = text.upper() in ("AND", "OR", "NOT") or (lead in "+!" or (lead == "-" and not re.match(r"\.?\d", rest)))
        if risky:
            return "\\" + text if escape_style == "escape" else '"' + text + '"'
    return text


GROUP_LEAVES = {name: _ordered_leaf(name) for name in ORDERED} | {
    "source": st.one_of(
        st.builds(Term, st.just("source"), st.just("="), TEXT_VALUES.filter(lambda v: "\\" not in v and '"' not in v)),
        st.builds(Term, st.just("source"), st.just("like"), PATTERNS),
        st.builds(Exists, st.just("source")),
    ),
    "is_blank": st.builds(Term, st.just("is_blank"), st.just("="), st.sampled_from(["true", "false"])),
}
OCCURS = st.sampled_from(["", "+", "-"])


@st.composite
def grouped_clauses(draw: st.DrawFn) -> tuple[str, object]:
    """A field group as text, and what it means: (required, prohibited, alternatives) leaves."""
    field = draw(st.sampled_from(sorted(GROUP_LEAVES)))
    items = draw(st.lists(st.tuples(OCCURS, GROUP_LEAVES[field]), min_size=1, max_size=4))
    style = draw(st.sampled_from(["escape", "quote"]))
    text = f"{field}:(" + " ".join(_group_item(occur, _rhs_text(leaf, style)) for occur, leaf in items) + ")"
    return text, ("group", items)


def _group_item(occur: str, rhs: str) -> str:
    """``-0.5`` in a group is the number -0.5; excluding 0.5 is written ``- 0.5`` (the prefix stands apart)."""
    return f"{occur} {rhs}" if occur == "-" and re.match(r"\.?\d", rhs) else occur + rhs


@st.composite
def lucene_filters(draw: st.DrawFn) -> tuple[str, object]:
    """Top-level sequences of prefixed clauses and groups, joined by OR."""
    seqs = []
    for _ in range(draw(st.integers(1, 2))):
        elements = draw(
            st.lists(
                st.tuples(OCCURS, st.one_of(grouped_clauses(), LEAVES.map(lambda t: (t.to_text(), t)))),
                min_size=1,
                max_size=3,
            )
        )
        seqs.append(elements)
    text = " OR ".join(" ".join(occur + sub for occur, (sub, _) in seq) for seq in seqs)
    return text, seqs


def _group_holds(items: list, row: dict[str, object]) -> bool:
    required = [leaf for occur, leaf in items if occur == "+"]
    prohibited = [leaf for occur, leaf in items if occur == "-"]
    plain = [leaf for occur, leaf in items if occur == ""]
    return (
        all(_holds(leaf, row) for leaf in required)
        and not any(_holds(leaf, row) for leaf in prohibited)
        and (not plain or any(_holds(leaf, row) for leaf in plain))
    )


def _lucene_holds(seqs: list, row: dict[str, object]) -> bool:
    """Lucene's meaning written plainly: at the top level every unprefixed or + element is required."""

    def element(meaning: object) -> bool:
        if isinstance(meaning, tuple) and meaning[0] == "group":
            return _group_holds(meaning[1], row)
        return _holds(meaning, row)

    return any(all((not element(m)) if occur == "-" else element(m) for occur, (_, m) in seq) for seq in seqs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lucene_filters())
def test_groups_and_prefixes_select_what_the_reference_evaluator_selects(
    con: duckdb.DuckDBPyConnection, case: tuple[str, list]
) -> None:
    text, seqs = case
    rows = [dict(zip(list(COLUMNS), row, strict=True)) for row in ROWS]
    assert select(con, text) == {row["id"] for row in rows if _lucene_holds(seqs, row)}
    tree = parse(text)
    assert parse(tree.to_text()) == tree


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=8).filter(lambda s: s.strip() == s and s), TEXT_VALUES)
def test_any_field_name_prints_escaped_and_parses_back(name: str, value: str) -> None:
    tree = Term(name, "=", value)
    assert parse(tree.to_text()) == tree
    columns = {name: "VARCHAR"}
    where, params = compile_filter(tree.to_text(), columns)
    assert params == [value]
