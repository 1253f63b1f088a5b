"""A query over many small files, after compaction, and over the same rows as one file:
`scripts/bench-compaction.sh [--files N] [--rows-per-file R]`.

Starts one node (local store), writes table `small` as N files of R rows (a flush after each
batch) and table `single` with the same rows as one file, times each query (median of eleven runs
after one warm-up) on `small`, compacts `small` with the `skein.compact` action, and times them
again, alternating with the same query on `single`. Prints the times and the ratios to the
single file. Not a test: it asserts nothing.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from conftest import Node, action, query  # noqa: E402

QUERIES = {
    "group by": "SELECT g, count(*) AS n, sum(v) AS s, avg(w) AS a FROM {t} GROUP BY g ORDER BY g",
    "filter": "SELECT count(*) AS n, sum(v) AS s FROM {t} WHERE k BETWEEN 1000000 AND 1100000",
    "top": "SELECT k, v FROM {t} ORDER BY v DESC LIMIT 10",
}


def rows(start: int, n: int, rng) -> pa.Table:
    return pa.table({
        "k": pa.array(np.arange(start, start + n), pa.int64()),
        "g": pa.array(rng.integers(0, 50, n), pa.int32()),
        "v": pa.array(rng.random(n) * 1000),
        "w": pa.array(rng.integers(0, 1_000_000, n), pa.int64()),
    })


def timed(conn, *sqls: str, runs: int = 11) -> list[float]:
    """The median time of each of `sqls`, run in turn (so drift hits them alike)."""
    for sql in sqls:
        query(conn, sql)
    times = [[] for _ in sqls]
    for _ in range(runs):
        for sql, t in zip(sqls, times):
            t0 = time.perf_counter()
            query(conn, sql)
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rows-per-file", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory() as tmp:
        node = Node(Path(tmp) / "data", "--compaction-interval", "0s", "--compaction-cool-down", "0s",
                    "--compaction-target-bytes", str(1 << 30), "--flush-rows", "100000000",
                    "--flush-interval", "1h").start()
        try:
            batches = [rows(i * args.rows_per_file, args.rows_per_file, rng) for i in range(args.files)]
            t0 = time.perf_counter()
            with node.connect() as conn, conn.cursor() as cur:
                for b in batches:
                    cur.adbc_ingest("small", b, mode="create_append")
                    action(node, "skein.flush", b"small")
                cur.adbc_ingest("single", pa.concat_tables(batches), mode="create_append")
                action(node, "skein.flush", b"single")
            print(f"loaded {args.files} files of {args.rows_per_file} rows in {time.perf_counter() - t0:.1f} s")
            with node.connect() as conn:
                before = {n: timed(conn, q.format(t="small"))[0] for n, q in QUERIES.items()}
            t0 = time.perf_counter()
            report = action(node, "skein.compact", b"small")[0]
            took = time.perf_counter() - t0
            print(f"compaction: {report['merged_files']} files into {report['files']} in {took:.1f} s")
            after, single = {}, {}
            with node.connect() as conn:
                for n, q in QUERIES.items():
                    after[n], single[n] = timed(conn, q.format(t="small"), q.format(t="single"))
                files = query(conn, "SELECT table_name, files FROM skein_tables ORDER BY 1").to_pylist()
            print(f"files: {files}")
            print(f"{'query':<10} {'small files':>12} {'compacted':>10} {'one file':>9} "
                  f"{'small/one':>10} {'compacted/one':>14}")
            for n in QUERIES:
                print(f"{n:<10} {before[n] * 1000:>10.1f}ms {after[n] * 1000:>8.1f}ms "
                      f"{single[n] * 1000:>7.1f}ms {before[n] / single[n]:>9.2f}x "
                      f"{after[n] / single[n]:>13.2f}x")
        finally:
            node.stop()


if __name__ == "__main__":
    main()
