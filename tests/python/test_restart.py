"""A node keeps its tables and flushed rows across restarts; SIGTERM flushes buffers."""

import pyarrow as pa

from conftest import assert_same_rows, oracle, query

QUERIES = [
    "SELECT count(*) AS n, sum(v) AS s FROM r",
    "SELECT g, count(*) AS n, avg(v) AS a FROM r GROUP BY g ORDER BY g",
    "SELECT * FROM r WHERE v % 997 = 0 ORDER BY v",
]


def data(start, n):
    return pa.table({"v": pa.array(range(start, start + n), pa.int64()), "g": pa.array([f"g{i % 7}" for i in range(start, start + n)])})


def test_restart_after_flush_and_after_sigterm(make_node, tmp_path):
    node = make_node(data_dir=tmp_path / "r")
    first = data(0, 30_000)
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("r", first, mode="create")
    flushed = node.flush("r")
    assert flushed, "the flush action answers once done"
    objects = list((node.data_dir / "objects").rglob("*.parquet"))
    assert len(objects) == 1

    # More rows only in the buffer: SIGTERM must flush them.
    second = data(30_000, 12_345)
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("r", second, mode="append")
    all_rows = pa.concat_tables([first, second])
    with node.connect() as conn:
        before = [query(conn, q) for q in QUERIES]
    for got, q in zip(before, QUERIES):
        assert_same_rows(got, oracle({"r": all_rows}, q))

    assert node.stop() == 0
    assert len(list((node.data_dir / "objects").rglob("*.parquet"))) == 2
    node.start()
    with node.connect() as conn:
        after = [query(conn, q) for q in QUERIES]
    for b, a in zip(before, after):
        assert_same_rows(a, b)
