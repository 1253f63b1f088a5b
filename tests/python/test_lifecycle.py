"""A table's files over time: compaction of small files, DELETE and UPDATE by copy-on-write,
retention, and a node killed at every step of a rewrite. DuckDB applying the same statements to
the same rows is the oracle."""

import collections
import datetime
import threading
import time

import duckdb
import pyarrow as pa
import pytest

from conftest import action, metric, query

COMPACT_FLAGS = ("--compaction-cool-down", "0s", "--compaction-min-files", "2",
                 "--compaction-interval", "0s")



def batch(start: int, n: int, day_offset: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "grp": pa.array([f"g{i % 7}" for i in ids]),
        "v": pa.array([i * 0.5 for i in ids], pa.float64()),
        "ts": pa.array([1_700_000_000_000_000 + day_offset * 86_400_000_000 + i for i in ids],
                       pa.timestamp("us")),
    })


def load_files(node, table: str, batches: list) -> pa.Table:
    """Ingests each batch and flushes it into a file of its own; returns all rows."""
    with node.connect() as conn, conn.cursor() as cur:
        for b in batches:
            cur.adbc_ingest(table, b, mode="create_append")
            action(node, "skein.flush", table.encode())
    return pa.concat_tables(batches)


QUERIES = [
    "SELECT count(*) AS n, sum(v) AS s, min(id) AS lo, max(id) AS hi FROM {t}",
    "SELECT grp, count(*) AS n, sum(v) AS s FROM {t} GROUP BY grp ORDER BY grp",
    "SELECT id, v FROM {t} WHERE id BETWEEN 1234 AND 1300 ORDER BY id",
    "SELECT count(*) AS n FROM {t} WHERE ts < TIMESTAMP '2023-11-14 22:13:20.002'",
]


def answers(conn, table: str) -> list:
    return [query(conn, q.format(t=table)).to_pylist() for q in QUERIES]


def oracle_answers(rows: pa.Table) -> list:
    db = duckdb.connect()
    db.register("src", rows)
    db.execute("CREATE TABLE t AS SELECT * FROM src")
    return [db.sql(q.format(t="t")).to_arrow_table().to_pylist() for q in QUERIES]


def files_of(conn, table: str) -> int:
    return query(conn, f"SELECT files FROM skein_tables WHERE table_name = '{table}'").column(0)[0].as_py()


def test_compaction_merges_small_files_and_changes_no_answer(make_node):
    node = make_node(*COMPACT_FLAGS, "--compaction-grace", "2s")
    rows = load_files(node, "events", [batch(i * 500, 500) for i in range(24)])
    want = oracle_answers(rows)
    with node.connect() as conn:
        assert files_of(conn, "events") == 24
        assert answers(conn, "events") == want

    # Queries run all through the merge, the grace period and the deletion: none may fail.
    stop = threading.Event()
    failures, runs = [], [0]

    def keep_querying():
        with node.connect() as conn:
            while not stop.is_set():
                try:
                    got = answers(conn, "events")
                    if got != want:
                        failures.append(("wrong answer", got[0]))
                    runs[0] += 1
                except Exception as e:  # every failure is reported below
                    failures.append(str(e))

    readers = [threading.Thread(target=keep_querying) for _ in range(2)]
    for r in readers:
        r.start()
    try:
        swapped_at = time.monotonic()
        report = action(node, "skein.compact", b"events")
        assert report[0]["merges"] == 1 and report[0]["merged_files"] == 24, report
        assert report[0]["files"] == 1, report
        # The replaced objects stay for the grace period (2 s), then a pass deletes them.
        with node.connect() as conn:
            assert query(conn, "SELECT retired_files FROM skein_tables").column(0)[0].as_py() == 24
        deleted, deadline = 0, time.monotonic() + 30
        while deleted < 24 and time.monotonic() < deadline:
            report = action(node, "skein.compact", b"events")
            if report[0]["deleted_objects"]:
                assert time.monotonic() - swapped_at >= 2, "deleted before the grace period"
            deleted += report[0]["deleted_objects"]
            if deleted < 24:
                time.sleep(0.1)  # polling interval
        assert deleted == 24, report
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert not failures, failures[:3]
    assert runs[0] > 0
    objects = list((node.data_dir / "objects").rglob("*.parquet"))
    assert len(objects) == 1, objects
    with node.connect() as conn:
        assert files_of(conn, "events") == 1
        assert answers(conn, "events") == want
    metrics = node.http_get("/metrics")
    assert 'skein_table_files{table="events"} 1' in metrics
    assert 'skein_rewrites_total{kind="merge",table="events"} 1' in metrics
    assert "skein_deleted_objects_total 24" in metrics


def test_compaction_respects_target_size_min_files_and_cool_down(make_node):
    # Files of ~6 KB against a 40 KB target: groups of up to ~6 files, only those of 3 or more.
    node = make_node("--compaction-cool-down", "0s", "--compaction-min-files", "3",
                     "--compaction-interval", "0s", "--compaction-target-bytes", "40000")
    load_files(node, "sized", [batch(i * 500, 500) for i in range(14)])
    with node.connect() as conn:
        sizes = query(conn, "SELECT bytes FROM skein_files ORDER BY created_at").column(0).to_pylist()
    report = action(node, "skein.compact", b"sized")[0]
    # The oracle: pack the files in order into groups of at most the target.
    groups, current, total = [], [], 0
    for size in sizes:
        if current and total + size > 40000:
            groups.append(current)
            current, total = [], 0
        current.append(size)
        total += size
    groups.append(current)
    merged = [g for g in groups if len(g) >= 3]
    assert report["merges"] == len(merged) and report["merged_files"] == sum(map(len, merged)), (report, sizes)
    assert report["files"] == len(sizes) - sum(map(len, merged)) + len(merged)

    fresh = make_node("--compaction-cool-down", "1h", "--compaction-min-files", "2",
                      "--compaction-interval", "0s")
    load_files(fresh, "young", [batch(i * 100, 100) for i in range(4)])
    assert action(fresh, "skein.compact", b"young")[0]["merges"] == 0


DML = [
    "DELETE FROM t WHERE id % 10 = 3",
    "UPDATE t SET v = v * 2, grp = grp || '-x' WHERE id BETWEEN 2000 AND 4200",
    "UPDATE t AS x SET v = -x.v WHERE x.grp = 'g4'",
    "DELETE FROM t WHERE v > 5000 OR grp IS NULL",
    "UPDATE t SET ts = ts + INTERVAL 1 DAY WHERE id < 100",
    # The new value is only computed for the rows that change: '3-x' would not cast.
    "UPDATE t SET v = CAST(substr(grp, 2) AS DOUBLE) WHERE grp NOT LIKE '%-x' AND id % 3 = 0",
]


def test_delete_and_update_match_duckdb_over_flushed_and_buffered_rows(make_node):
    node = make_node(*COMPACT_FLAGS)
    flushed = load_files(node, "t", [batch(i * 1000, 1000) for i in range(5)])
    buffered = batch(5000, 1500)  # stays in the buffer until the statement
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", buffered, mode="append")
    db = duckdb.connect()
    db.register("src", pa.concat_tables([flushed, buffered]))
    db.execute("CREATE TABLE t AS SELECT * FROM src")
    with node.connect() as conn:
        for sql in DML:
            want = db.execute(sql).fetchone()[0]
            got = query(conn, sql).column(0)[0].as_py()
            assert got == want, (sql, got, want)
            compare = "SELECT * FROM t ORDER BY id"
            assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist(), sql
        # Parameters, through a prepared statement and ExecuteUpdate.
        with conn.cursor() as cur:
            cur.adbc_statement.set_sql_query("DELETE FROM t WHERE id >= ? AND id < ?")
            cur.adbc_statement.prepare()
            cur.adbc_statement.bind(pa.record_batch([pa.array([10, 6000]), pa.array([20, 6010])],
                                                    names=["a", "b"]))
            got = cur.adbc_statement.execute_update()
        want = db.execute("DELETE FROM t WHERE id >= 10 AND id < 20").fetchone()[0]
        want += db.execute("DELETE FROM t WHERE id >= 6000 AND id < 6010").fetchone()[0]
        assert got == want, (got, want)
        # Parameters in SET and in WHERE, bound in the statement's order.
        with conn.cursor() as cur:
            cur.adbc_statement.set_sql_query("UPDATE t SET v = v + ?, grp = ? WHERE id < ? AND grp <> ?")
            cur.adbc_statement.prepare()
            cur.adbc_statement.bind(pa.record_batch(
                [pa.array([1.5]), pa.array(["bound"]), pa.array([300]), pa.array(["g2"])],
                names=["a", "b", "c", "d"]))
            got = cur.adbc_statement.execute_update()
        want = db.execute("UPDATE t SET v = v + 1.5, grp = 'bound' WHERE id < 300 AND grp <> 'g2'").fetchone()[0]
        assert got == want > 0, (got, want)
        compare = "SELECT * FROM t ORDER BY id"
        assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist()
        # A statement that matches nothing changes nothing and says so.
        assert query(conn, "DELETE FROM t WHERE id < 0").column(0)[0].as_py() == 0
        for bad, words in [("UPDATE t SET nope = 1", "nope"),
                           ("DELETE FROM t USING u WHERE t.id = u.id", "USING"),
                           ("UPDATE t SET v = 'text' WHERE id = 1", "")]:
            with pytest.raises(Exception) as e:
                query(conn, bad)
            assert words in str(e.value), str(e.value)
        assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist()

    # The rewritten table survives a restart (the WAL does not bring deleted rows back).
    node.stop()
    node.start()
    with node.connect() as conn:
        assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist()


def test_delete_with_concurrent_ingest_loses_nothing(make_node):
    node = make_node(*COMPACT_FLAGS)
    initial = load_files(node, "t", [batch(i * 1000, 1000) for i in range(4)])
    added = []
    stop = threading.Event()

    def ingest():
        start = 1_000_000  # never matched by the statements below
        with node.connect() as conn, conn.cursor() as cur:
            while not stop.is_set():
                b = batch(start, 200)
                cur.adbc_ingest("t", b, mode="append")
                added.append(b)
                start += 200

    writer = threading.Thread(target=ingest)
    writer.start()
    try:
        with node.connect() as conn:
            deleted = query(conn, "DELETE FROM t WHERE id < 1000000 AND id % 3 = 0").column(0)[0].as_py()
            updated = query(conn, "UPDATE t SET v = 0 WHERE id < 1000000 AND id % 3 = 1").column(0)[0].as_py()
    finally:
        stop.set()
        writer.join()
    db = duckdb.connect()
    db.register("src", initial)
    db.execute("CREATE TABLE t AS SELECT * FROM src")
    assert deleted == db.execute("DELETE FROM t WHERE id % 3 = 0").fetchone()[0]
    assert updated == db.execute("UPDATE t SET v = 0 WHERE id % 3 = 1").fetchone()[0]
    if added:
        db.register("more", pa.concat_tables(added))
        db.execute("INSERT INTO t SELECT * FROM more")
    compare = "SELECT id, grp, v FROM t ORDER BY id"
    with node.connect() as conn:
        assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist()


def test_retention_drops_exactly_the_expired_files(make_node):
    node = make_node("--compaction-cool-down", "0s", "--compaction-min-files", "100",
                     "--compaction-interval", "0s")
    now_us = int(time.time() * 1_000_000)
    day = 86_400_000_000
    # One file per age: 0, 10, 20, 30, 40 days old; one that straddles 20..30 days.
    ages = [0, 10, 20, 30, 40]
    batches = []
    for i, age in enumerate(ages):
        b = batch(i * 100, 100)
        batches.append(b.set_column(3, "ts", pa.array([now_us - age * day - j for j in range(100)],
                                                    pa.timestamp("us"))))
    straddle = batch(900, 100).set_column(3, "ts", pa.array(
        [now_us - (20 + j // 10) * day for j in range(100)], pa.timestamp("us")))
    load_files(node, "aged", batches + [straddle])
    with node.connect() as conn:
        with pytest.raises(Exception) as e:
            query(conn, "ALTER TABLE aged SET (retention = '25days')")
        assert "time_column" in str(e.value)
        with pytest.raises(Exception) as e:
            query(conn, "ALTER TABLE aged SET (time_column = 'grp')")
        assert "DATE or TIMESTAMP" in str(e.value)
        query(conn, "ALTER TABLE aged SET (time_column = 'ts', retention = '25days')")
        keys = {r["object_key"]: r["rows"] for r in query(conn, "SELECT object_key, rows FROM skein_files").to_pylist()}
    report = action(node, "skein.compact", b"aged")[0]
    # Files whose every row is older than 25 days: the 30- and 40-day ones only.
    assert report["expired_files"] == 2, report
    with node.connect() as conn:
        got = query(conn, "SELECT min(id) AS lo, count(*) AS n FROM aged WHERE id >= 300 AND id < 500").to_pylist()
        assert got == [{"lo": None, "n": 0}]
        assert query(conn, "SELECT count(*) FROM aged").column(0)[0].as_py() == 400
        row = query(conn, "SELECT time_column, retention_ms FROM skein_tables WHERE table_name = 'aged'").to_pylist()
        assert row == [{"time_column": "ts", "retention_ms": 25 * 86_400_000}]
    assert len(keys) == 6
    # A table created with its options has them from the start.
    with node.connect() as conn:
        query(conn, "CREATE TABLE logs (ts TIMESTAMP, msg VARCHAR) WITH (time_column = 'ts', retention = '7days', flush_rows = 100)")
        row = query(conn, "SELECT time_column, retention_ms, flush_rows FROM skein_tables WHERE table_name = 'logs'").to_pylist()
        assert row == [{"time_column": "ts", "retention_ms": 7 * 86_400_000, "flush_rows": 100}]
        with pytest.raises(Exception) as e:
            query(conn, "CREATE TABLE bad (ts TIMESTAMP) WITH (retention = 'soon')")
        assert "retention" in str(e.value)
        assert "bad" not in query(conn, "SELECT table_name FROM skein_tables").column(0).to_pylist()


def utc_day(micros) -> str:
    return (datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=micros)).strftime("%Y-%m-%d")


def test_a_time_column_lays_files_out_by_day_and_filters_prune_them(make_node):
    node = make_node(*COMPACT_FLAGS)
    day = 86_400_000_000
    start = 1_763_596_800_000_000  # 2025-11-20 00:00 UTC

    def events(first: int, n: int, days: int) -> pa.Table:
        ids = list(range(first, first + n))
        # Spread over `days` days, an hour before and after midnight too; every 13th row no time.
        ts = [None if i % 13 == 0 else start + (i % days) * day + (i * 7_919_000_000) % day for i in ids]
        return pa.table({"id": pa.array(ids, pa.int64()), "ts": pa.array(ts, pa.timestamp("us")),
                         "v": pa.array([i * 0.25 for i in ids])})

    first = events(0, 5_000, 10)
    with node.connect() as conn:
        query(conn, "CREATE TABLE ev (id BIGINT, ts TIMESTAMP, v DOUBLE) WITH (time_column = 'ts')")
    load_files(node, "ev", [first])
    per_day = collections.Counter(None if t is None else utc_day(t) for t in first.column("ts").cast(pa.int64()).to_pylist())
    with node.connect() as conn:
        files = query(conn, "SELECT object_key, rows, partition FROM skein_files WHERE table_name = 'ev'").to_pylist()
    # One flush, one file per day and one for the rows without a time.
    assert {f["partition"]: f["rows"] for f in files} == dict(per_day)
    assert len(files) == len(per_day) == 11
    for f in files:
        if f["partition"] is not None:
            assert f"/{f['partition']}/" in f["object_key"], f

    rows = first
    probe = "SELECT count(*) AS n, sum(v) AS s FROM {t} WHERE ts >= TIMESTAMP '2025-11-23' AND ts < TIMESTAMP '2025-11-24'"

    def check():
        with node.connect() as conn:
            read = metric(node, "query_files_read_total")
            got = query(conn, probe.format(t="ev")).to_pylist()
            # Only the day's file is read: every other one is pruned by its time statistics.
            assert metric(node, "query_files_read_total") - read == 1
            assert got == oracle_query(rows, probe)
            everything = "SELECT count(*) AS n, count(ts) AS t, sum(v) AS s, min(ts) AS lo, max(ts) AS hi FROM {t}"
            assert query(conn, everything.format(t="ev")).to_pylist() == oracle_query(rows, everything)

    check()
    # A second flush adds a file to some days; compaction merges them day by day.
    second = events(5_000, 1_000, 3)
    load_files(node, "ev", [second])
    rows = pa.concat_tables([first, second])
    report = action(node, "skein.compact", b"ev")[0]
    assert report["merged_files"] == 8, report  # three days and the no-time files: 2 each
    with node.connect() as conn:
        files = query(conn, "SELECT partition, rows FROM skein_files WHERE table_name = 'ev'").to_pylist()
    per_day.update(None if t is None else utc_day(t) for t in second.column("ts").cast(pa.int64()).to_pylist())
    assert {f["partition"]: f["rows"] for f in files} == dict(per_day)
    check()
    # An UPDATE moving half a day's rows to another day writes them under that day.
    with node.connect() as conn:
        query(conn, "UPDATE ev SET ts = ts - INTERVAL 17 DAY WHERE ts >= TIMESTAMP '2025-11-21' AND ts < TIMESTAMP '2025-11-22' AND id % 2 = 0")
        files = query(conn, "SELECT partition, rows FROM skein_files WHERE table_name = 'ev' ORDER BY partition NULLS LAST").to_pylist()
    db = duckdb.connect()
    db.register("src", rows)
    db.execute("CREATE TABLE ev AS SELECT * FROM src")
    db.execute("UPDATE ev SET ts = ts - INTERVAL 17 DAY WHERE ts >= TIMESTAMP '2025-11-21' AND ts < TIMESTAMP '2025-11-22' AND id % 2 = 0")
    rows = db.sql("SELECT * FROM ev").to_arrow_table()
    per_day = collections.Counter(None if t is None else utc_day(t) for t in rows.column("ts").cast(pa.int64()).to_pylist())
    assert sorted((f["partition"] or "", f["rows"]) for f in files) == sorted((d or "", n) for d, n in per_day.items())
    assert "2025-11-04" in per_day
    check()


def test_files_from_before_the_time_column_are_laid_out_by_day(make_node):
    node = make_node(*COMPACT_FLAGS)
    day = 86_400_000_000
    start = 1_763_596_800_000_000  # 2025-11-20 00:00 UTC

    def mixed(first: int, n: int) -> pa.Table:
        ids = list(range(first, first + n))
        ts = [None if i % 11 == 0 else start + (i % 4) * day + i for i in ids]
        return pa.table({"id": pa.array(ids, pa.int64()), "ts": pa.array(ts, pa.timestamp("us")),
                         "v": pa.array([i * 0.5 for i in ids])})

    rows = load_files(node, "late", [mixed(i * 700, 700) for i in range(3)])
    with node.connect() as conn:
        query(conn, "ALTER TABLE late SET (time_column = 'ts')")
    report = action(node, "skein.compact", b"late")[0]
    assert report["laid_out_files"] == 3, report
    per_day = collections.Counter(None if t is None else utc_day(t)
                                  for t in rows.column("ts").cast(pa.int64()).to_pylist())
    with node.connect() as conn:
        files = query(conn, "SELECT partition, rows FROM skein_files WHERE table_name = 'late'").to_pylist()
        # The three files became one per day and one of rows without a time (merged per day).
        assert sorted(files, key=lambda f: str(f["partition"])) == sorted(
            ({"partition": d, "rows": n} for d, n in per_day.items()), key=lambda f: str(f["partition"]))
        probe = "SELECT count(*) AS n, sum(v) AS s, min(ts) AS lo FROM {t} WHERE ts >= TIMESTAMP '2025-11-22' AND ts < TIMESTAMP '2025-11-23'"
        read = metric(node, "query_files_read_total")
        assert query(conn, probe.format(t="late")).to_pylist() == oracle_query(rows, probe)
        assert metric(node, "query_files_read_total") - read == 1
        everything = "SELECT count(*) AS n, count(ts) AS t, sum(v) AS s FROM {t}"
        assert query(conn, everything.format(t="late")).to_pylist() == oracle_query(rows, everything)
    again = action(node, "skein.compact", b"late")[0]
    assert (again["laid_out_files"], again["merges"]) == (0, 0), again


def oracle_query(rows: pa.Table, sql: str) -> list:
    db = duckdb.connect()
    db.register("src", rows)
    db.execute("CREATE TABLE t AS SELECT * FROM src")
    return db.sql(sql.format(t="t")).to_arrow_table().to_pylist()


def test_days_of_a_time_column_are_utc_days_for_every_time_type(make_node):
    node = make_node()
    late = 1_763_681_400_000_000  # 2025-11-20 23:30 UTC
    table = pa.table({
        "d": pa.array([20_412, 20_413], pa.date32()),
        "tz": pa.array([late, late + 3_600_000_000], pa.timestamp("us", tz="UTC")),
        "ms": pa.array([late // 1000, late // 1000 + 3_600_000], pa.timestamp("ms")),
        "ns": pa.array([late * 1000, late * 1000 + 3_600_000_000_000], pa.timestamp("ns")),
    })
    want = ["2025-11-20", "2025-11-21"]
    for column in table.column_names:
        name = f"by_{column}"
        with node.connect() as conn, conn.cursor() as cur:
            cur.adbc_ingest(name, table, mode="create")
            query(conn, f"ALTER TABLE {name} SET (time_column = '{column}')")
        action(node, "skein.flush", name.encode())
        with node.connect() as conn:
            got = query(conn, f"SELECT partition FROM skein_files WHERE table_name = '{name}' ORDER BY 1").column(0).to_pylist()
            assert got == want, column
            assert query(conn, f"SELECT count(*) FROM {name}").column(0)[0].as_py() == 2


@pytest.mark.parametrize("step,changed", [
    ("flush:uploaded", False),
    ("flush:committed", False),
    ("rewrite:uploaded", False),
    ("merge:swapped", False),
    ("delete:object", False),
    ("delete:swapped", True),
])
def test_a_node_killed_at_any_step_keeps_every_row_exactly_once(make_node, step, changed):
    node = make_node(*COMPACT_FLAGS, "--compaction-grace", "0s")
    rows = load_files(node, "t", [batch(i * 300, 300) for i in range(6)])
    # Rows in the buffer (and the WAL) for the flush steps; a merge leaves them alone.
    buffered = batch(1800, 500, day_offset=3)
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", buffered, mode="append")
    db = duckdb.connect()
    db.register("src", pa.concat_tables([rows, buffered]))
    db.execute("CREATE TABLE t AS SELECT * FROM src")
    node.stop()
    node.env = {"SKEIN_KILL_AT": step}
    node.start()
    statement = "DELETE FROM t WHERE id % 4 = 0"
    with pytest.raises(Exception):
        if step.startswith("flush:"):
            with node.connect() as conn, conn.cursor() as cur:
                cur.adbc_ingest("t", batch(2300, 200), mode="append")
            db.register("more", batch(2300, 200))
            db.execute("INSERT INTO t SELECT * FROM more")
            action(node, "skein.flush", b"t")
        elif step == "delete:swapped":
            with node.connect() as conn:
                query(conn, statement)
        else:
            action(node, "skein.compact", b"t")
    assert node.proc.wait(timeout=30) != 0
    node.env = {}
    node.start()
    if changed:
        db.execute(statement)
    compare = "SELECT * FROM t ORDER BY id"
    with node.connect() as conn:
        assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist()
        # Maintenance goes on from where it stopped.
        node.flush("t")
        action(node, "skein.compact", b"t")
        assert query(conn, compare).to_pylist() == db.sql(compare).to_arrow_table().to_pylist()
        listed = set(query(conn, "SELECT object_key FROM skein_files").column(0).to_pylist())
    # No object is left behind that the catalog does not list: uploads the kill cut off before
    # their commit were collected on start, replaced files after the grace period.
    root = node.data_dir / "objects"
    stored = {p.relative_to(root).as_posix() for p in (root / "tables").rglob("*.parquet")}
    assert stored == listed
