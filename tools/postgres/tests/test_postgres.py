"""The postgres tool against a real, throwaway PostgreSQL cluster (tests/pg_cluster.py)."""

from pathlib import Path

import psycopg
import pytest
from fake_proxy import FakeEgress
from pg_cluster import Cluster

from centaur_tools import ToolError, testing

TOOL_DIR = Path(__file__).parent.parent


def call(method: str, **arguments):
    return testing.call(TOOL_DIR, method, **arguments)


def count_invoices(cluster: Cluster) -> int:
    with psycopg.connect(cluster.url("shop")) as connection:
        row = connection.execute("select count(*) from billing.invoices").fetchone()
        assert row is not None
        return row[0]


def test_query_returns_columns_and_json_values(database: Cluster) -> None:
    answer = call(
        "query",
        sql="select id, total, issued_on, sent_at, pdf, tags, meta, grace, customer_id = $2 "
        "as mine from billing.invoices where id = $1",
        params=[3, 2],
    )
    assert answer == {
        "columns": ["id", "total", "issued_on", "sent_at", "pdf", "tags", "meta", "grace",
                    "mine"],
        "types": ["int8", "numeric", "date", "timestamptz", "bytea", "text[]", "jsonb",
                  "interval", "bool"],
        "rows": [[3, "31.50", "2024-01-04", "2024-01-04T12:00:00+00:00", "deadbeef", ["a", "b"],
                  {"n": 3}, "P1DT2H3M4.5S", True]],
        "row_count": 1,
        "truncated": False,
    }  # fmt: skip


def test_rows_are_limited(database: Cluster) -> None:
    cut = call("query", sql="select id from billing.invoices order by id", max_rows=50)
    assert cut["row_count"] == 50 and cut["truncated"] is True
    assert cut["rows"][-1] == [50]
    whole = call("query", sql="select id from billing.invoices", max_rows=500)
    assert whole["row_count"] == 500 and whole["truncated"] is False
    with pytest.raises(ToolError, match="max_rows must be between 1 and 10000"):
        call("query", sql="select 1", max_rows=0)


def test_a_slow_statement_is_cancelled(database: Cluster) -> None:
    with pytest.raises(ToolError, match=r"ran longer than timeout_ms \(200 ms\) and was cancel"):
        call("query", sql="select pg_sleep(10)", timeout_ms=200)
    with pytest.raises(ToolError, match="timeout_ms must be between 1 and 25000"):
        call("query", sql="select 1", timeout_ms=60_000)


@pytest.mark.parametrize(
    "sql",
    [
        "insert into billing.customers values (3, 'Initech')",
        "update billing.invoices set total = 0",
        "delete from billing.invoices",
        "create table public.evil (id int)",
        "with gone as (delete from billing.invoices returning id) select count(*) from gone",
        "select nextval(pg_get_serial_sequence('billing.invoices', 'id'))",
    ],
)
def test_writes_are_refused(database: Cluster, sql: str) -> None:
    with pytest.raises(ToolError, match=r"this tool only reads: cannot execute .* in a read-only"):
        call("query", sql=sql)
    assert count_invoices(database) == 500


def test_the_read_only_transaction_cannot_be_left(database: Cluster) -> None:
    with pytest.raises(ToolError, match="one SQL statement per call"):
        call("query", sql="commit; insert into public.notes values (1, 'x')")
    with pytest.raises(ToolError, match="read-write mode must be set before any query"):
        call("query", sql="set transaction read write")
    answer = call("query", sql="set default_transaction_read_only = off")
    assert answer["status"] == "SET" and answer["columns"] == []
    # A new call is a new session: still read-only.
    with pytest.raises(ToolError, match="only reads"):
        call("query", sql="insert into public.notes values (1, 'x')")
    assert call("query", sql="select count(*) from public.notes")["rows"] == [[0]]


def test_bad_sql_is_explained(database: Cluster) -> None:
    with pytest.raises(ToolError, match=r'PostgreSQL: syntax error at or near "selec" \(42601'):
        call("query", sql="selec 1")
    with pytest.raises(ToolError, match=r'relation "billing\.nope" does not exist'):
        call("query", sql="select * from billing.nope")
    with pytest.raises(ToolError, match=r"give one value in params for each \$1"):
        call("query", sql="select $1::int")


def test_list_tables(database: Cluster) -> None:
    tables = call("list_tables")
    assert [(t["schema"], t["name"], t["kind"]) for t in tables] == [
        ("billing", "customers", "table"),
        ("billing", "invoices", "table"),
        ("billing", "totals", "view"),
        ("public", "notes", "table"),
    ]
    invoices = tables[1]
    assert invoices["estimated_rows"] == 500 and invoices["comment"] == "one row per invoice"
    assert [t["name"] for t in call("list_tables", schema="public")] == ["notes"]


def test_describe_table(database: Cluster) -> None:
    described = call("describe_table", name="billing.invoices")
    columns = {c["name"]: c for c in described["columns"]}
    assert list(columns)[:3] == ["id", "customer_id", "total"]
    assert columns["total"] == {"name": "total", "type": "numeric(12,2)", "nullable": False,
                                "default": None, "comment": "in euros"}  # fmt: skip
    assert columns["tags"]["default"] == "'{}'::text[]" and columns["sent_at"]["nullable"]
    constraints = {c["kind"]: c["definition"] for c in described["constraints"]}
    assert constraints["primary key"] == "PRIMARY KEY (id)"
    assert (
        constraints["foreign key"] == "FOREIGN KEY (customer_id) REFERENCES billing.customers(id)"
    )
    assert constraints["check"] == "CHECK (total >= 0::numeric)"
    assert {i["name"] for i in described["indexes"]} == {"invoices_pkey", "invoices_customer"}
    assert call("describe_table", name="notes")["schema"] == "public"
    with pytest.raises(ToolError, match="no table or view named 'nope'"):
        call("describe_table", name="nope")


def test_the_connection_goes_through_the_egress_tunnel(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host name only the proxy knows: reachable only through the tunnel.
    egress = FakeEgress(routes={f"db.internal:{cluster.port}": ("127.0.0.1", cluster.port)})
    egress.start()
    try:
        monkeypatch.setenv("CENTAUR_PROXY_SOCKET", egress.path)
        url = cluster.url("shop").replace("127.0.0.1", "db.internal")
        monkeypatch.setenv("DATABASE_URL", url)
        answer = call("query", sql="select current_setting('application_name')")
        assert answer["rows"] == [["centaur-tool-postgres"]]
        assert egress.connects[0] == f"CONNECT db.internal:{cluster.port}"
        monkeypatch.setenv("DATABASE_URL", url.replace("db.internal", "other.internal"))
        with pytest.raises(ToolError, match=r"other\.internal is not allowed for this tool"):
            call("query", sql="select 1")
    finally:
        egress.stop()


def test_methods_are_described() -> None:
    methods = testing.describe(TOOL_DIR)
    assert set(methods) == {"query", "list_tables", "describe_table"}
    query = methods["query"]["parameters"]
    assert query["required"] == ["sql"]
    assert "$1" in query["properties"]["sql"]["description"]
