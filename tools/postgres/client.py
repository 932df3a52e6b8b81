"""PostgreSQL: read-only SQL against the configured database, with row and time limits.

Every call opens its own connection (through the egress proxy, which allows and audits it),
runs one statement in a READ ONLY transaction with a statement timeout, and rolls back.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import ipaddress
import math
import uuid
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from centaur_tools import Tool, ToolError, context, egress

APPLICATION_NAME = "centaur-tool-postgres"
CONNECT_TIMEOUT_SECS = 10
# The tool's calls end after timeout_secs (30 by default): a statement must end before that.
MAX_TIMEOUT_MS = 25_000
MAX_ROWS = 10_000
RELKINDS = {
    "r": "table",
    "v": "view",
    "m": "materialized view",
    "p": "partitioned table",
    "f": "foreign table",
}

LIST_TABLES = """
select n.nspname, c.relname, c.relkind::text, c.reltuples::bigint,
       obj_description(c.oid, 'pg_class')
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'v', 'm', 'p', 'f')
  and case when $1::text is null
           then n.nspname not in ('pg_catalog', 'information_schema')
                and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp%'
           else n.nspname = $1::text end
order by 1, 2
limit 2000
"""

DESCRIBE_RELATION = """
select c.oid, n.nspname, c.relname, c.relkind::text, c.reltuples::bigint,
       obj_description(c.oid, 'pg_class')
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.oid = to_regclass($1::text)
"""

DESCRIBE_COLUMNS = """
select a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), not a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid), col_description(a.attrelid, a.attnum)
from pg_catalog.pg_attribute a
left join pg_catalog.pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
where a.attrelid = $1::oid and a.attnum > 0 and not a.attisdropped
order by a.attnum
"""

DESCRIBE_CONSTRAINTS = """
select conname, contype::text, pg_catalog.pg_get_constraintdef(oid, true)
from pg_catalog.pg_constraint
where conrelid = $1::oid
order by contype, conname
"""

DESCRIBE_INDEXES = """
select i.relname, pg_catalog.pg_get_indexdef(x.indexrelid)
from pg_catalog.pg_index x
join pg_catalog.pg_class i on i.oid = x.indexrelid
where x.indrelid = $1::oid
order by 1
"""


class Postgres(Tool):
    """Read-only SQL against the deployment's PostgreSQL database."""

    def query(
        self,
        sql: str,
        params: list[Any] | None = None,
        max_rows: int = 200,
        timeout_ms: int = 5000,
    ) -> dict[str, Any]:
        """Runs one read-only SQL statement and returns its rows.

        The statement runs in a READ ONLY transaction (a write fails) that is rolled back, and
        is cancelled after `timeout_ms`. Values come back as JSON: numerics as strings, dates
        and times in ISO 8601, bytea as hex.

        Args:
            sql: One statement (no `;`-separated list), e.g. "select id, total from invoices
                where customer_id = $1 order by created_at desc". Parameters are $1, $2, ….
            params: The values of $1, $2, … in order.
            max_rows: At most this many rows are returned (`truncated` says when there were
                more); at most 10000.
            timeout_ms: The statement is cancelled after this many milliseconds (at most
                25000).
        """
        if not sql.strip():
            raise ToolError("sql is empty: give one SQL statement")
        if not 1 <= max_rows <= MAX_ROWS:
            raise ToolError(f"max_rows must be between 1 and {MAX_ROWS}")
        if not 1 <= timeout_ms <= MAX_TIMEOUT_MS:
            raise ToolError(f"timeout_ms must be between 1 and {MAX_TIMEOUT_MS}")
        columns, types, rows, truncated, status = _read(sql, params, max_rows, timeout_ms)
        result: dict[str, Any] = {
            "columns": columns,
            "types": types,
            "rows": rows,
            "row_count": len(rows),
            "truncated": truncated,
        }
        if not columns:
            result["status"] = status
        return result

    def list_tables(self, schema: str | None = None) -> list[dict[str, Any]]:
        """Lists the tables and views of the database (or of one schema), with their kind,
        estimated row count and comment.

        Args:
            schema: Only this schema, e.g. "public"; every schema but the system ones when
                omitted.
        """
        _, _, rows, _, _ = _read(LIST_TABLES, [schema], 2000, 10_000)
        return [
            {
                "schema": nspname,
                "name": relname,
                "kind": RELKINDS.get(relkind, relkind),
                "estimated_rows": reltuples if reltuples is not None and reltuples >= 0 else None,
                "comment": comment,
            }
            for nspname, relname, relkind, reltuples, comment in rows
        ]

    def describe_table(self, name: str) -> dict[str, Any]:
        """Describes a table or view: its columns (type, nullable, default, comment), its
        primary key, unique, check and foreign key constraints, and its indexes.

        Args:
            name: The table's name, optionally with its schema: "invoices" (found through the
                search path) or "billing.invoices".
        """
        if not name.strip():
            raise ToolError("name is empty: give a table's name")
        with _transaction(10_000) as cursor:
            found = _fetch(cursor, DESCRIBE_RELATION, [name.strip()])
            if not found:
                raise ToolError(
                    f"no table or view named {name!r} (list_tables shows them; a name with "
                    "capitals needs its quotes: '\"Invoices\"')"
                )
            oid, nspname, relname, relkind, reltuples, comment = found[0]
            columns = _fetch(cursor, DESCRIBE_COLUMNS, [oid])
            constraints = _fetch(cursor, DESCRIBE_CONSTRAINTS, [oid])
            indexes = _fetch(cursor, DESCRIBE_INDEXES, [oid])
        kinds = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check",
                 "x": "exclusion", "t": "trigger", "n": "not null"}  # fmt: skip
        return {
            "schema": nspname,
            "name": relname,
            "kind": RELKINDS.get(relkind, relkind),
            "estimated_rows": reltuples if reltuples is not None and reltuples >= 0 else None,
            "comment": comment,
            "columns": [
                {"name": n, "type": t, "nullable": nullable, "default": default, "comment": c}
                for n, t, nullable, default, c in columns
            ],
            "constraints": [
                {"name": n, "kind": kinds.get(k, k), "definition": d}
                for n, k, d in constraints
                if k != "n"
            ],
            "indexes": [{"name": n, "definition": d} for n, d in indexes],
        }


# ---- connection and execution ----


def _conninfo() -> str:
    """The connection string of DATABASE_URL, its host and port replaced by the egress proxy's
    tunnel to them (the host name is kept for TLS and the password file, `hostaddr` is where
    to connect)."""
    dsn = context().secret("DATABASE_URL")
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as error:
        raise ToolError(f"DATABASE_URL is not a valid connection string: {error}") from None
    host = str(info.get("host") or "localhost")
    port_text = str(info.get("port") or "5432")
    if "," in host or "," in port_text:
        raise ToolError("DATABASE_URL names several hosts: this tool connects to one")
    if not port_text.isdigit():
        raise ToolError(f"DATABASE_URL's port {port_text!r} is not a number")
    if host.startswith("/"):
        # A Unix socket: not a network connection, nothing to tunnel.
        info["host"] = host
    else:
        local_host, local_port = egress.tunnel(host, int(port_text))
        if (local_host, local_port) != (host, int(port_text)):
            info["hostaddr"] = local_host
            info["port"] = str(local_port)
    info.setdefault("application_name", APPLICATION_NAME)
    # Also the session's default, so that no later transaction of it can write either.
    info["options"] = f"{info.get('options') or ''} -c default_transaction_read_only=on".strip()
    return make_conninfo("", **info)


class _transaction:
    """A connection's READ ONLY transaction with a statement timeout; always rolled back and
    closed."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self.connection: psycopg.Connection[Any] | None = None

    def __enter__(self) -> psycopg.RawCursor[Any]:
        conninfo = _conninfo()
        try:
            self.connection = psycopg.connect(
                conninfo,
                connect_timeout=CONNECT_TIMEOUT_SECS,
                autocommit=False,
            )
        except psycopg.OperationalError as error:
            raise ToolError(f"cannot connect to the database: {_first_line(error)}") from None
        cursor = psycopg.RawCursor(self.connection)
        try:
            cursor.execute("set transaction read only")
            cursor.execute(
                "select set_config('statement_timeout', $1, true), "
                "set_config('idle_in_transaction_session_timeout', $2, true)",
                [str(self.timeout_ms), str(max(self.timeout_ms * 2, 10_000))],
            )
        except psycopg.Error as error:
            self.__exit__(None, None, None)
            raise ToolError(f"cannot start a read-only transaction: {error}") from None
        return cursor

    def __exit__(self, *_: object) -> None:
        if self.connection is not None:
            with contextlib.suppress(psycopg.Error):
                self.connection.rollback()
            self.connection.close()
            self.connection = None


def _fetch(cursor: psycopg.RawCursor[Any], sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    try:
        cursor.execute(sql, params, prepare=True)
    except psycopg.Error as error:
        raise _tool_error(error, 0) from None
    return cursor.fetchall()


def _read(
    sql: str, params: list[Any] | None, max_rows: int, timeout_ms: int
) -> tuple[list[str], list[str], list[list[Any]], bool, str | None]:
    with _transaction(timeout_ms) as cursor:
        try:
            # prepare=True: the extended protocol, which takes exactly one statement.
            cursor.execute(sql, params or None, prepare=True)
            if cursor.description is None:
                return [], [], [], False, cursor.statusmessage
            rows = cursor.fetchmany(max_rows + 1)
        except psycopg.Error as error:
            raise _tool_error(error, timeout_ms) from None
        columns = [column.name for column in cursor.description]
        types = [_type_name(cursor, column.type_code) for column in cursor.description]
    return (
        columns,
        types,
        [[_json(value) for value in row] for row in rows[:max_rows]],
        len(rows) > max_rows,
        None,
    )


def _type_name(cursor: psycopg.RawCursor[Any], oid: int) -> str:
    info = cursor.connection.adapters.types.get(oid)
    if info is None:
        return str(oid)
    return f"{info.name}[]" if oid == info.array_oid else info.name


def _tool_error(error: psycopg.Error, timeout_ms: int) -> ToolError:
    message = _first_line(error)
    diag = error.diag
    if isinstance(error, errors.ReadOnlySqlTransaction):
        return ToolError(f"this tool only reads: {message} (run SELECT statements only)")
    if isinstance(error, errors.QueryCanceled):
        return ToolError(
            f"the statement ran longer than timeout_ms ({timeout_ms} ms) and was cancelled: "
            "narrow it (a WHERE, a LIMIT) or raise timeout_ms"
        )
    if "cannot insert multiple commands" in message:
        return ToolError("send one SQL statement per call (no ';'-separated list)")
    if isinstance(error, errors.UndefinedParameter | errors.ProtocolViolation) or (
        "bind message supplies" in message
    ):
        return ToolError(f"{message}: give one value in params for each $1, $2, …")
    details = [f"{error.sqlstate}" if error.sqlstate else ""]
    if diag.message_detail:
        details.append(f"detail: {diag.message_detail}")
    if diag.message_hint:
        details.append(f"hint: {diag.message_hint}")
    if diag.statement_position:
        details.append(f"at character {diag.statement_position}")
    extra = "; ".join(d for d in details if d)
    return ToolError(f"PostgreSQL: {message}" + (f" ({extra})" if extra else ""))


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _json(value: Any) -> Any:
    """A database value as JSON."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _interval(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json(item) for key, item in value.items()}
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    return str(value)


def _interval(value: datetime.timedelta) -> str:
    """An ISO 8601 duration: P1DT2H3M4.5S."""
    sign = "-" if value < datetime.timedelta(0) else ""
    value = abs(value)
    seconds = value.seconds + value.microseconds / 1_000_000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    time_part = "".join(
        part
        for part in (
            f"{int(hours)}H" if hours else "",
            f"{int(minutes)}M" if minutes else "",
            f"{secs:g}S" if secs else "",
        )
        if part
    )
    days = f"{value.days}D" if value.days else ""
    if not days and not time_part:
        return "PT0S"
    return f"{sign}P{days}" + (f"T{time_part}" if time_part else "")
