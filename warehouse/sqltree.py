"""SQL parsed by DuckDB's own parser (`json_serialize_sql`), for the checks that read a query's shape.

DuckDB's parser is the dialect the query will run in, so a check never misses SQL that DuckDB accepts and
another parser does not (its newer lambda syntax, say), and it is already loaded: a second parser cost a
cohort run a third of a second to import. Only SELECT statements serialize: anything else (EXPLAIN, and a
SELECT over PIVOT, which DuckDB does not serialize) gives no trees, and so does a tree nested too deep for
Python's JSON reader. A check over no trees finds nothing; it never stops a query.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import lru_cache

_LOCK = threading.Lock()
_CONNECTION: list = []  # one in-memory DuckDB, made on first use


def _connection():
    import duckdb

    with _LOCK:
        if not _CONNECTION:
            _CONNECTION.append(duckdb.connect(":memory:"))
        return _CONNECTION[0].cursor()


@lru_cache(maxsize=512)
def statements(sql: str) -> tuple[dict, ...]:
    """The parsed statements of `sql`, () when DuckDB cannot parse it or it is not only SELECTs.

    Cached per text: every catalog rebuild checks every cohort's rules. The trees are only read."""
    import duckdb

    con = _connection()
    try:
        row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        parsed: dict = json.loads(row[0]) if row else {"error": True}
    except (duckdb.Error, RecursionError, ValueError):  # text DuckDB rejects, or a tree too deep to read
        return ()
    finally:
        con.close()
    if parsed.get("error"):
        return ()
    return tuple(s["node"] for s in parsed.get("statements", []))


def walk(node, parent: dict | None = None) -> Iterator[tuple[dict, dict | None]]:
    """Every expression or query node under `node`, with the expression it is a direct operand of."""
    if isinstance(node, dict):
        is_expression = "class" in node
        if is_expression:
            yield node, parent
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from walk(value, node if is_expression else parent)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, parent)


def operands(node: dict) -> list[dict]:
    """The direct operands of an expression: left and right, children, or a function's arguments."""
    if "left" in node:
        return [node["left"], node["right"]]
    if node.get("class") == "FUNCTION":
        return [a["expression"] for a in node.get("arguments", [])]
    return list(node.get("children", []))


def column_name(node: dict) -> str | None:
    """`view_position` for the column reference `u.view_position`, lower case; None for anything else."""
    if node.get("class") == "COLUMN_REF":
        return node["column_names"][-1].lower()
    return None


def names_a_field_of(node: dict, column: str) -> bool:
    """Whether a column reference reads a field of `column` (`labels.edema`), not the column itself."""
    names = [n.lower() for n in node.get("column_names", [])] if node.get("class") == "COLUMN_REF" else []
    return column in names[:-1]


def contained(node: dict) -> tuple[dict, dict] | None:
    """(the list, the value) of `value IN [list]` or `value IN $list`, which DuckDB parses as contains()."""
    if node.get("class") == "FUNCTION" and node.get("function_name") in ("contains", "list_contains", "list_has"):
        args = operands(node)
        if len(args) == 2:
            return args[0], args[1]
    return None


def string_value(node: dict) -> str | None:
    """The text of a string literal ('PA'), else None."""
    if node.get("class") == "CONSTANT" and node.get("literal", {}).get("kind") in ("STRING", "VARCHAR"):
        return node["literal"]["text"]
    return None


def parameter_name(node: dict) -> str | None:
    """`finding` for `$finding`, else None."""
    if node.get("class") == "PARAMETER":
        return node["identifier"]
    return None


def list_items(node: dict) -> list[dict] | None:
    """The items of a list literal (['a', 'b']), else None."""
    if node.get("class") == "FUNCTION" and node.get("function_name") == "list_value":
        return operands(node)
    return None
