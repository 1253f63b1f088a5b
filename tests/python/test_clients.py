"""Other Flight SQL clients: arrow-rs's flight_sql_client, and the HTTP endpoints."""

import os
import re
import subprocess

import pyarrow as pa
import pytest

from conftest import query


def cli(node, *args) -> str:
    path = os.environ.get("FLIGHT_SQL_CLIENT")
    if not path or not os.path.exists(path):
        pytest.fail("FLIGHT_SQL_CLIENT is not set to arrow-rs's flight_sql_client; run scripts/test.sh")
    host, port = node.flight_addr.rsplit(":", 1)
    out = subprocess.run([path, "--host", host, "--port", port, *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_flight_sql_client_query_and_tables(node):
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("cli_table", pa.table({"n": pa.array([1, 2, 3], pa.int64())}), mode="create")
    out = cli(node, "statement-query", "SELECT sum(n) AS total FROM cli_table")
    assert "total" in out and "| 6 " in out, out
    # The client casts its string parameters to the types the server declares for them.
    out = cli(node, "prepared-statement-query", "SELECT n * 10 AS x FROM cli_table WHERE n = $1", "-p", "$1=2")
    assert "| 20 " in out, out
    with node.connect() as conn:
        catalog = query(conn, "SELECT current_database() AS c").to_pylist()[0]["c"]
    assert catalog in cli(node, "catalogs")
    out = cli(node, "tables", catalog)
    assert "cli_table" in out, out


def test_list_actions_describes_every_skein_action(node):
    client = node.flight_client()
    try:
        actions = {a.type: a.description for a in client.list_actions()}
    finally:
        client.close()
    for kind in ["skein.flush", "skein.compact", "skein.nodes", "skein.forget_node",
                 "skein.snapshot", "skein.snapshots", "skein.restore", "CancelFlightInfo"]:
        assert kind in actions, kind
        # Prose a person reads: no gaps left by a broken line continuation.
        assert actions[kind] and "  " not in actions[kind], (kind, actions[kind])


def test_health_and_metrics(node):
    assert node.http_get("/health").strip() == "ok"
    assert node.http_status("/ready") == (200, "ready\n")
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("m", pa.table({"n": pa.array(range(10), pa.int64())}), mode="create")
    metrics = node.http_get("/metrics")
    assert "skein_ingest_rows_total 10" in metrics
    with node.connect() as conn:
        query(conn, "SELECT count(*) FROM m")
    metrics = node.http_get("/metrics")
    per_table = {(m.group(1), m.group(2)): int(m.group(3)) for m in re.finditer(
        r'skein_table_requests_total\{kind="(\w+)",table="(\w+)"\} (\d+)', metrics)}
    assert per_table[("ingest", "m")] >= 1 and per_table[("query", "m")] == 1, per_table
    assert 'skein_requests_total{code="Ok",method="DoPut.StatementIngest"} 1' in metrics
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    # One batch: one WAL record, synced, and its rows held in the buffer until a flush.
    assert values["skein_wal_records_total"] == 1
    assert values["skein_wal_syncs_total"] == 1
    assert values["skein_wal_sync_duration_seconds_count"] == 1
    assert values["skein_wal_bytes_total"] > 80  # the 10 int64 values and their framing
    assert values["skein_buffer_rows"] == 10
    node.flush("m")
    metrics = node.http_get("/metrics")
    assert "skein_buffer_rows 0" in metrics
    assert "skein_buffer_bytes 0" in metrics
