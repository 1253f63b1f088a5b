"""Shared storage end to end: nodes on a real SeaweedFS bucket and a real Redis catalog.

Each test gets its own bucket and Redis; answers are checked against DuckDB given the same rows.
"""

import json
import re
import subprocess
import time

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import action, assert_same_rows, metric, oracle, query, server_bin

CLUSTER = "ci"


def storage_flags(seaweed, bucket, redis_server, *extra):
    return (
        "--s3-endpoint", seaweed.endpoint, "--s3-bucket", bucket,
        "--redis-url", redis_server.url, "--cluster-name", CLUSTER,
        "--storage-timeout", "5s", *extra,
    )


@pytest.fixture
def aws_env(seaweed, monkeypatch):
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)


def batch(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "grp": pa.array([f"g{i % 7}" for i in ids]),
        "amount": pa.array([i * 0.5 for i in ids]),
        "note": pa.array([None if i % 11 == 0 else f"n{i}" for i in ids]),
    })


def ingest(node, table: pa.Table, name="events", mode="create_append"):
    with node.connect() as conn:
        with conn.cursor() as cur:
            cur.adbc_ingest(name, table, mode=mode)



def wait_for(condition, what: str, deadline_s: float = 60):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


QUERIES = [
    "SELECT count(*) AS n, sum(id) AS s FROM events",
    "SELECT grp, count(*) AS n, sum(amount) AS a, count(note) AS c FROM events GROUP BY grp ORDER BY grp",
    "SELECT id, note FROM events WHERE id BETWEEN 1500 AND 1510 ORDER BY id",
    "SELECT count(*) AS n FROM events WHERE note IS NULL",
]


def test_a_second_node_answers_from_the_shared_bucket_and_catalog(
        aws_env, seaweed, bucket, redis_server, make_node):
    a = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "a"))
    data = pa.concat_tables([batch(0, 1000), batch(1000, 1000), batch(2000, 1000)])
    for start in (0, 1000, 2000):
        ingest(a, batch(start, 1000))
        a.flush("events")

    keys = seaweed.list_keys(bucket, "tables/")
    assert len(keys) == 3 and all(k.endswith(".parquet") for k in keys), keys
    # The manifest in Redis lists the same objects, with statistics and a's WAL position.
    stored = redis_server.client().hgetall(f"skein:{CLUSTER}:tables")
    meta = json.loads(stored[b"events"])
    assert sorted(f["key"] for f in meta["files"]) == keys
    ids = [next(s for s in f["stats"] if s["column"] == "id") for f in meta["files"]]
    assert sorted((s["min"], s["max"]) for s in ids) == [(0, 999), (1000, 1999), (2000, 2999)]
    assert meta["flushed_wal"]["a"] > 0

    # A node with an empty data directory, attached to the same Redis and bucket.
    b = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "b"))
    with a.connect() as ca, b.connect() as cb:
        for sql in QUERIES:
            want = oracle({"events": data}, sql)
            assert_same_rows(query(ca, sql), want)
            assert_same_rows(query(cb, sql), want)
    # a and b form a cluster: each downloads a file at most once, and every file was downloaded
    # by one of them. (Which node owns which file follows the ring's hash of three random keys,
    # so all three may fall to one node; the cluster tests check that work is shared out.)
    misses = {n: metric(n, "cache_misses_total") for n in (a, b)}
    assert all(m <= 3 for m in misses.values()) and sum(misses.values()) >= 3, misses

    # Rows b ingests and flushes are seen by a (its catalog follows Redis).
    ingest(b, batch(3000, 500))
    b.flush("events")
    data = pa.concat_tables([data, batch(3000, 500)])
    with a.connect() as ca:
        sql = QUERIES[0]
        assert_same_rows(query(ca, sql), oracle({"events": data}, sql))


def test_a_selective_filter_reads_only_the_files_that_can_match(
        aws_env, seaweed, bucket, redis_server, make_node):
    n = make_node(*storage_flags(seaweed, bucket, redis_server))
    for start in range(0, 5000, 1000):
        ingest(n, batch(start, 1000))
        n.flush("events")
    data = pa.concat_tables([batch(s, 1000) for s in range(0, 5000, 1000)])
    with n.connect() as conn:
        for sql, files in [
            ("SELECT count(*) AS n, sum(amount) AS a FROM events WHERE id BETWEEN 2100 AND 2200", 1),
            ("SELECT id FROM events WHERE id IN (5, 4999) ORDER BY id", 2),
            ("SELECT count(*) AS n FROM events WHERE id >= 3000 AND grp = 'g1'", 2),
            ("SELECT count(*) AS n FROM events WHERE id > 10000", 0),
            ("SELECT count(*) AS n FROM events WHERE amount > 100", 5),  # floats are not pruned
        ]:
            read, pruned = metric(n, "query_files_read_total"), metric(n, "query_files_pruned_total")
            assert_same_rows(query(conn, sql), oracle({"events": data}, sql))
            assert metric(n, "query_files_read_total") - read == files, sql
            assert metric(n, "query_files_pruned_total") - pruned == 5 - files, sql


def test_flushes_wait_out_an_object_store_outage_without_loss(
        aws_env, seaweed, bucket, redis_server, make_node):
    n = make_node(*storage_flags(seaweed, bucket, redis_server, "--flush-interval", "1s"))
    ingest(n, batch(0, 1000))
    n.flush("events")
    seaweed.stop()
    try:
        # Ingest goes on (the WAL holds the rows); flushes fail and are retried.
        ingest(n, batch(1000, 1000))
        ingest(n, batch(2000, 1000))
        with pytest.raises(flight.FlightError, match="object store"):
            n.flush("events")
        failures = metric(n, "flush_failures_total")
        wait_for(lambda: metric(n, "flush_failures_total") > failures, "a background flush to fail")
    finally:
        seaweed.start()
    data = pa.concat_tables([batch(0, 1000), batch(1000, 1000), batch(2000, 1000)])
    # Once the store is back the background flusher lands everything.
    wait_for(lambda: metric(n, "buffer_rows") == 0, "the buffers to drain")
    fresh = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "fresh"))
    with fresh.connect() as conn:
        sql = QUERIES[0]
        assert_same_rows(query(conn, sql), oracle({"events": data}, sql))


def test_a_restore_after_redis_lost_its_data_brings_every_flushed_row_back(
        aws_env, seaweed, bucket, redis_server, make_node, tmp_path):
    a = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "a"))
    ingest(a, batch(0, 1000))
    a.flush("events")
    snap = action(a, "skein.snapshot")[0]
    assert snap["version"] >= 1
    # Rows flushed after the last scheduled snapshot must come back too.
    ingest(a, batch(1000, 1000))
    a.flush("events")
    data = pa.concat_tables([batch(0, 1000), batch(1000, 1000)])

    redis_server.restart()  # no persistence: everything is gone
    # The node notices, keeps answering from what it knows, and saves its copy as a snapshot.
    with a.connect() as conn:
        sql = QUERIES[0]
        assert_same_rows(query(conn, sql), oracle({"events": data}, sql))
    wait_for(lambda: len(action(a, "skein.snapshots")) >= 2, "the node's copy to be saved")
    # Alive, but not ready for traffic until the catalog is restored.
    assert a.http_status("/health")[0] == 200
    code, text = a.http_status("/ready")
    assert code == 503 and "catalog lost its data" in text, (code, text)
    # A new node does not start on the emptied catalog while the bucket holds its snapshots.
    code, _, err = start_failing(tmp_path, *storage_flags(seaweed, bucket, redis_server, "--node-id", "new"))
    assert code != 0 and "probably lost" in err and "--restore-snapshot latest" in err, err[-2000:]
    # Flushes are refused until the catalog is restored; rows stay buffered (and in the WAL).
    ingest(a, batch(2000, 500))
    with pytest.raises(flight.FlightError, match="catalog was lost"):
        a.flush("events")

    plan = action(a, "skein.restore", json.dumps({"snapshot": "latest", "dry_run": True}).encode())[0]
    assert plan["dry_run"] is True and plan["files"] == 2 and plan["rows"] == 2000
    assert plan["missing_objects"] == []
    assert redis_server.client().hgetall(f"skein:{CLUSTER}:tables") == {}, "a dry run changes nothing"
    action(a, "skein.restore", json.dumps({"snapshot": "latest"}).encode())
    assert a.http_status("/ready") == (200, "ready\n")
    a.flush("events")
    data = pa.concat_tables([data, batch(2000, 500)])

    fresh = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "fresh"))
    with fresh.connect() as conn:
        for sql in QUERIES:
            assert_same_rows(query(conn, sql), oracle({"events": data}, sql))

    # A bad request names what is wrong and the node keeps serving.
    with pytest.raises(pa.ArrowInvalid, match="dry_run"):
        action(a, "skein.restore", b'{"snapshot": "latest", "dryrun": true}')
    with pytest.raises(pa.ArrowInvalid, match="not a snapshot of cluster"):
        action(a, "skein.restore", json.dumps({"snapshot": "nope"}).encode())
    with a.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM events").column("n")[0].as_py() == 2500


def start_failing(tmp_path, *flags, deadline_s=60):
    """Runs a node that must refuse to start; returns (exit code, seconds, stderr)."""
    started = time.monotonic()
    proc = subprocess.run(
        [server_bin(), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "bad"), *flags],
        capture_output=True, text=True, timeout=deadline_s)
    return proc.returncode, time.monotonic() - started, proc.stderr


def test_bad_or_unreachable_endpoints_stop_the_node_with_a_clear_error(
        aws_env, seaweed, bucket, redis_server, tmp_path, monkeypatch):
    from components import free_port
    closed = free_port()
    cases = [
        (("--s3-endpoint", f"http://127.0.0.1:{closed}", "--s3-bucket", bucket), rf"127\.0\.0\.1:{closed}"),
        (("--s3-endpoint", "ftp://x", "--s3-bucket", bucket), "must be an http"),
        (("--s3-endpoint", seaweed.endpoint), "go together"),
        (("--s3-endpoint", seaweed.endpoint, "--s3-bucket", bucket, "--redis-url", f"redis://127.0.0.1:{closed}/0"),
         "Redis"),
        (("--redis-url", redis_server.url), "--s3-endpoint"),
        # A routable address nobody answers on: the deadline, not a hang.
        (("--s3-endpoint", "http://10.255.255.1:9000", "--s3-bucket", bucket, "--storage-timeout", "2s"), "10.255.255.1"),
    ]
    for flags, message in cases:
        code, seconds, err = start_failing(tmp_path, *flags)
        assert code != 0, flags
        assert re.search(message, err), (flags, err[-2000:])
        assert seconds < 30, (flags, seconds)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    code, _, err = start_failing(tmp_path, "--s3-endpoint", seaweed.endpoint, "--s3-bucket", bucket)
    assert code != 0 and "403" in err, err[-2000:]


def test_a_file_above_the_multipart_threshold_round_trips(
        aws_env, seaweed, bucket, redis_server, make_node):
    import random
    rng = random.Random(7)
    n_rows = 1_300_000  # random 64-bit integers: a Parquet file well above 8 MiB
    big = pa.table({"id": pa.array(range(n_rows), pa.int64()),
                    "r": pa.array([rng.getrandbits(63) for _ in range(n_rows)], pa.int64())})
    a = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "a"))
    # In batches under the ADBC driver's 16 MiB message limit.
    ingest(a, pa.RecordBatchReader.from_batches(big.schema, big.to_batches(200_000)), name="big")
    a.flush("big")
    sizes = seaweed.list_objects(bucket, "tables/")
    assert max(sizes.values()) > 8 * 1024 * 1024, sizes
    fresh = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "fresh"))
    sql = "SELECT count(*) AS n, sum(r % 1000003) AS s, max(r) AS m FROM big"
    with fresh.connect() as conn:
        assert_same_rows(query(conn, sql), oracle({"big": big}, sql))


def test_nodes_flushing_the_same_table_at_once_lose_nothing(
        aws_env, seaweed, bucket, redis_server, make_node):
    import threading
    nodes = [make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", f"w{i}"))
             for i in range(3)]
    ingest(nodes[0], batch(0, 10))  # creates the table
    errors = []

    def writer(i, n):
        try:
            for round_ in range(8):
                start = 100_000 * (i + 1) + 1000 * round_
                ingest(n, batch(start, 500), mode="append")
                n.flush("events")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i, n)) for i, n in enumerate(nodes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    data = pa.concat_tables([batch(0, 10)] + [
        batch(100_000 * (i + 1) + 1000 * r, 500) for i in range(3) for r in range(8)])
    meta = json.loads(redis_server.client().hget(f"skein:{CLUSTER}:tables", "events"))
    # Every flush of every node is in the manifest (w0's first file holds the first 10 rows too).
    assert len(meta["files"]) == 3 * 8
    assert sum(f["rows"] for f in meta["files"]) == data.num_rows
    reader = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "reader"))
    with reader.connect() as conn:
        for sql in QUERIES[:2]:
            assert_same_rows(query(conn, sql), oracle({"events": data}, sql))


def test_a_node_restores_the_catalog_at_start_when_asked(
        aws_env, seaweed, bucket, redis_server, make_node):
    a = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "a"))
    ingest(a, batch(0, 1000))
    a.flush("events")
    action(a, "skein.snapshot")
    a.stop()
    redis_server.restart()  # the catalog is gone and no node holds a copy
    b = make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "b",
                                 "--restore-snapshot", "latest"))
    with b.connect() as conn:
        sql = QUERIES[0]
        assert_same_rows(query(conn, sql), oracle({"events": batch(0, 1000)}, sql))
    # The flag left in place does not restore again over a catalog in use.
    ingest(b, batch(1000, 10))
    b.flush("events")
    b.stop()
    b.start()
    with b.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM events").column("n")[0].as_py() == 1010


def test_two_processes_cannot_share_a_node_id(aws_env, seaweed, bucket, redis_server, make_node,
                                              tmp_path):
    make_node(*storage_flags(seaweed, bucket, redis_server, "--node-id", "same"))
    code, seconds, err = start_failing(
        tmp_path, *storage_flags(seaweed, bucket, redis_server, "--node-id", "same"))
    assert code != 0 and "in use by another running node" in err, err[-2000:]
    assert seconds < 30
