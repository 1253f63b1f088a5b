"""Overload: far more concurrent queries and ingest streams than the limits allow, and an
oversized message. The node answers RESOURCE_EXHAUSTED past its limits, loses nothing it
acknowledged, stays under its memory bound, and serves normally afterwards."""

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight

from conftest import query

SLOW = "SELECT count(*) AS n FROM range(150000000) t(x) WHERE x % 7 = 3"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def exhausted(message: str) -> bool:
    """ADBC reports the gRPC code in its message: `(ResourceExhausted; …)`."""
    return "resourceexhausted" in message.replace("_", "").lower()


def run_all(n, work):
    outcomes = [None] * n

    def one(i):
        try:
            outcomes[i] = ("ok", work(i))
        except Exception as e:  # classified below
            outcomes[i] = ("error", str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_overload_is_refused_cleanly_and_nothing_acknowledged_is_lost(make_node):
    # The buffer bound is small next to what the writers send (12 × 3.2 MB): writers wait for
    # flushes to free space, and are refused if none comes in time.
    node = make_node("--max-queries", "2", "--max-ingest-streams", "2",
                     "--memory-limit", "512MB", "--max-buffer-bytes", str(8 * 1024 * 1024),
                     "--buffer-wait", "2s")

    def slow_query(_):
        with node.connect() as conn:
            return query(conn, SLOW).column("n")[0].as_py()

    outcomes = run_all(12, slow_query)
    ok = [v for kind, v in outcomes if kind == "ok"]
    refused = [v for kind, v in outcomes if kind == "error"]
    assert ok and all(v == 150000000 // 7 + (1 if 150000000 % 7 > 3 else 0) for v in ok), outcomes
    assert refused and all(exhausted(m) and "--max-queries" in m for m in refused), refused

    rows = 200_000
    batch = pa.table({"k": pa.array(range(rows), pa.int64()), "v": pa.array([1.5] * rows)})

    def ingest(i):
        with node.connect() as conn, conn.cursor() as cur:
            return cur.adbc_ingest("loaded", batch, mode="create_append")

    outcomes = run_all(12, ingest)
    acked = [v for kind, v in outcomes if kind == "ok"]
    refused = [v for kind, v in outcomes if kind == "error"]
    assert acked, outcomes
    assert all(exhausted(m) or "already exists" in m for m in refused), refused
    with node.connect() as conn:
        n = query(conn, "SELECT count(*) AS n FROM loaded").column("n")[0].as_py()
        # Every acknowledged batch exactly once, and the buffer within its bound.
        assert n == rows * len(acked), (n, len(acked))
        assert query(conn, "SELECT count(DISTINCT k) AS d FROM loaded").column("d")[0].as_py() == rows
    buffered = [float(line.split()[1]) for line in node.http_get("/metrics").splitlines()
                if line.startswith("skein_buffer_bytes ")]
    assert buffered and buffered[0] <= 8 * 1024 * 1024, buffered

    # One message larger than the node takes (64 MiB): refused, nothing lands.
    big = pa.table({"s": pa.array(["x" * 1024] * (70 * 1024))})
    client = node.flight_client()
    try:
        writer, _ = client.do_put(flight.FlightDescriptor.for_path("huge"), big.schema)
        writer.write_table(big, max_chunksize=len(big))
        writer.close()
        raised = None
    except (flight.FlightError, pa.ArrowException, OSError) as e:
        raised = str(e)
    assert raised and (exhausted(raised) or "larger than max" in raised), raised

    # Memory stayed bounded, and the node serves as before.
    assert peak_rss_mb(node.proc.pid) < 2048
    with node.connect() as conn:
        assert query(conn, "SELECT 1 AS one").column("one")[0].as_py() == 1
        tables = query(conn, "SELECT table_name FROM information_schema.tables").column(0).to_pylist()
        if "huge" in tables:
            assert query(conn, "SELECT count(*) AS n FROM huge").column("n")[0].as_py() == 0


def test_a_query_past_the_memory_limit_is_refused_and_others_go_on(make_node):
    # A list aggregate over 60 M rows cannot spill; under a 200 MB engine limit it runs out.
    node = make_node("--memory-limit", "200MB")
    with node.connect() as conn:
        try:
            query(conn, "SELECT length(list(x)) AS n FROM range(60000000) t(x)")
            raised = None
        except Exception as e:  # the message is checked below
            raised = str(e)
    assert raised and exhausted(raised) and "memory" in raised.lower(), raised
    assert peak_rss_mb(node.proc.pid) < 1024
    with node.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM range(1000000)").column("n")[0].as_py() == 1000000
