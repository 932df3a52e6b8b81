import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pg_cluster import Cluster

SCHEMA = """
create schema billing;
comment on schema billing is 'invoices and payments';
create table billing.customers (
    id bigint primary key,
    name text not null unique
);
create table billing.invoices (
    id bigint generated always as identity primary key,
    customer_id bigint not null references billing.customers (id),
    total numeric(12, 2) not null check (total >= 0),
    issued_on date not null,
    sent_at timestamptz,
    pdf bytea,
    tags text[] not null default '{}',
    meta jsonb,
    grace interval
);
comment on table billing.invoices is 'one row per invoice';
comment on column billing.invoices.total is 'in euros';
create index invoices_customer on billing.invoices (customer_id, issued_on);
create view billing.totals as
    select customer_id, sum(total) as total from billing.invoices group by customer_id;
create table public.notes (id int, body text);
insert into billing.customers values (1, 'Acme'), (2, 'Globex');
insert into billing.invoices (customer_id, total, issued_on, sent_at, pdf, tags, meta, grace)
select 1 + (i % 2), i * 10.50, date '2024-01-01' + i,
       timestamptz '2024-01-01 12:00:00+00' + i * interval '1 day', '\\xdeadbeef'::bytea,
       array['a', 'b'], jsonb_build_object('n', i), interval '1 day 02:03:04.5'
from generate_series(1, 500) as i;
analyze;
"""


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    started = Cluster.start()
    try:
        with psycopg.connect(started.url(), autocommit=True) as connection:
            connection.execute("create database shop")
        with psycopg.connect(started.url("shop"), autocommit=True) as connection:
            connection.execute(SCHEMA)
        yield started
    finally:
        started.stop()


@pytest.fixture
def database(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    monkeypatch.setenv("DATABASE_URL", cluster.url("shop"))
    monkeypatch.delenv("CENTAUR_PROXY_SOCKET", raising=False)
    return cluster
