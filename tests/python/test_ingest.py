"""Bulk loads: ADBC ingest modes and pyarrow's plain DoPut with a path descriptor."""

import time

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import assert_same_rows, query


def table(start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + n), pa.int64()),
            "label": pa.array([f"row {i}" for i in range(start, start + n)]),
        }
    )


def test_pyarrow_do_put_with_path_descriptor(node):
    data = pa.concat_tables([table(0, 5000), table(5000, 5000)])
    client = node.flight_client()
    writer, reader = client.do_put(flight.FlightDescriptor.for_path("events"), data.schema)
    for batch in data.to_batches(max_chunksize=1000):
        writer.write_batch(batch)
    writer.done_writing()
    reader.read()
    writer.close()
    client.close()
    with node.connect() as conn:
        got = query(conn, "SELECT id, label FROM events ORDER BY id")
        assert_same_rows(got, data)
        # A second put appends.
    client = node.flight_client()
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("events"), data.schema)
    writer.write_table(table(10_000, 10))
    writer.close()
    with node.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM events").to_pylist() == [{"n": 10_010}]


def test_adbc_modes(node):
    with node.connect() as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("m", table(0, 10), mode="create") == 10
        with pytest.raises(adbc_driver_manager.Error, match="already exists"):
            cur.adbc_ingest("m", table(0, 10), mode="create")
        assert cur.adbc_ingest("m", table(10, 5), mode="append") == 5
        assert query(conn, "SELECT count(*) AS n FROM m").to_pylist() == [{"n": 15}]
        with pytest.raises(adbc_driver_manager.Error, match="does not exist"):
            cur.adbc_ingest("nope", table(0, 1), mode="append")
        # replace: the new data (and schema) only.
        other = pa.table({"x": pa.array([1.5, 2.5])})
        assert cur.adbc_ingest("m", other, mode="replace") == 2
        assert_same_rows(query(conn, "SELECT x FROM m ORDER BY x"), other)
        # create_append: creates when missing, appends when present.
        assert cur.adbc_ingest("ca", table(0, 3), mode="create_append") == 3
        assert cur.adbc_ingest("ca", table(3, 3), mode="create_append") == 3
        assert_same_rows(query(conn, "SELECT * FROM ca ORDER BY id"), table(0, 6))


def test_many_batches_and_flush_thresholds(make_node):
    # A small row threshold: the flusher writes files while the stream is still arriving,
    # without being asked to.
    node = make_node("--flush-rows", "20000")
    data = pa.Table.from_batches(pa.table({"v": pa.array(range(200_000), pa.int64())}).to_batches(max_chunksize=10_000))
    with node.connect() as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("big", data, mode="create") == 200_000
        deadline = time.monotonic() + 30
        while "skein_flushes_total 0" in node.http_get("/metrics"):
            assert time.monotonic() < deadline, "no flush at the row threshold"
            time.sleep(0.05)
        want = [{"n": 200_000, "s": sum(range(200_000)), "d": 200_000}]
        sql = "SELECT count(*) AS n, sum(v) AS s, count(DISTINCT v) AS d FROM big"
        assert query(conn, sql).to_pylist() == want
        node.flush()
        assert query(conn, sql).to_pylist() == want
    assert len(list((node.data_dir / "objects").rglob("*.parquet"))) >= 2


def test_buffered_bytes_count_each_batch_once(make_node):
    # Batches decoded from Arrow IPC share one message buffer among their columns: counting
    # each column's whole buffer would make a wide table look many times its size, flush at a
    # fraction of --flush-bytes and push back long before --max-buffer-bytes.
    node = make_node("--flush-bytes", str(64 << 20), "--flush-rows", "10000000",
                     "--flush-interval", "1h")
    rows = 40_000
    data = pa.table({f"c{k}": pa.array([f"value {k}-{i:08d}" for i in range(rows)])
                     for k in range(20)})
    want = data.nbytes  # the Arrow data itself, pyarrow's count (about 20 MB)
    client = node.flight_client()
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("wide"), data.schema)
    for b in data.to_batches(max_chunksize=4_000):
        writer.write_batch(b)
    writer.close()
    metric = lambda name: float(next(line.rsplit(" ", 1)[1] for line in node.http_get("/metrics").splitlines()
                                     if line.startswith(f"skein_{name} ")))
    held = metric("buffer_bytes")
    assert 0.5 * want <= held <= 2 * want, (held, want)
    # Below --flush-bytes, nothing was flushed, and every row is there.
    assert metric("flushes_total") == 0
    assert not list((node.data_dir / "objects").rglob("*.parquet"))
    with node.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM wide").to_pylist() == [{"n": rows}]
