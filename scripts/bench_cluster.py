"""What a three-node cluster ships between nodes: `scripts/bench-cluster.sh [--rows N]`.

Starts Redis, SeaweedFS and three nodes (the test harness in tests/python), ingests N rows of one
table spread over the three nodes and left in their buffers (the case where every row must come
from its node), then runs a GROUP BY with few groups as a partial aggregate and the same
aggregation written so that it is gathered (over a CTE), and prints, from the coordinator's
query log, the rows and Arrow bytes the coordinator received from its peers in each, with the
times. Not a test: it asserts nothing.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))

from cluster import Cluster  # noqa: E402
from components import Redis, SeaweedS3  # noqa: E402
from conftest import query  # noqa: E402

PARTIAL = "SELECT g, count(*) AS n, sum(v) AS s, avg(v) AS a FROM t GROUP BY g /*{tag}*/"
GATHER = ("WITH x AS (SELECT * FROM t) SELECT g, count(*) AS n, sum(v) AS s, avg(v) AS a "
          "FROM x GROUP BY g /*{tag}*/")


def log_row(node, tag: str) -> dict:
    with node.connect() as conn:
        rows = query(conn, "SELECT shape, fragments, shipped_rows, shipped_bytes, duration_ms "
                           f"FROM skein_query_log WHERE query LIKE '%{tag}%' "
                           "AND query NOT LIKE '%skein_query_log%'").to_pylist()
    return rows[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_400_000)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with SeaweedS3(tmp / "s3").start() as s3, Redis(tmp / "redis").start() as redis:
            os.environ.update(s3.env())
            s3.create_bucket("bench")
            with Cluster(s3, "bench", redis, tmp / "nodes").start(3) as c:
                nodes = c.live()
                rng = np.random.default_rng(1)
                per = args.rows // 3
                for i, node in enumerate(nodes):
                    t = pa.table({
                        "id": np.arange(i * per, (i + 1) * per, dtype=np.int64),
                        "g": rng.integers(0, args.groups, per).astype(np.int32),
                        "v": rng.random(per),
                    })
                    with node.connect() as conn, conn.cursor() as cur:
                        cur.adbc_ingest("t", t, mode="create_append")
                        conn.commit()
                out = {"rows": args.rows, "groups": args.groups, "nodes": 3}
                for name, sql in [("partial", PARTIAL), ("gather", GATHER)]:
                    times = []
                    for r in range(args.runs):
                        tag = f"bench-{name}-{r}"
                        with nodes[0].connect() as conn:
                            started = time.perf_counter()
                            query(conn, sql.format(tag=tag))
                            times.append(time.perf_counter() - started)
                    row = log_row(nodes[0], f"bench-{name}-{args.runs - 1}")
                    out[name] = {**row, "best_s": min(times)}
                p, g = out["partial"], out["gather"]
                out["bytes_ratio_gather_to_partial"] = g["shipped_bytes"] / max(p["shipped_bytes"], 1)
                out["time_ratio_gather_to_partial"] = g["best_s"] / p["best_s"]
                print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
