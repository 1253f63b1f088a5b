"""Durable ingest benchmark: Arrow MB/s and rows/s through skein's DoPut for 1, 4 and 16
concurrent writers, with `--wal-sync fsync` and `none`, next to the raw fdatasync bandwidth of the
same disk at the same write size, all measured in one run. Run it with scripts/bench-ingest.sh.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import Node  # noqa: E402
from bench import raw_fdatasync  # noqa: E402


def make_batch(rows: int) -> pa.RecordBatch:
    rng = np.random.default_rng(7)
    return pa.RecordBatch.from_pydict(
        {
            "id": np.arange(rows, dtype=np.int64),
            "quantity": rng.integers(1, 50, rows, dtype=np.int64),
            "price": rng.random(rows) * 1000,
            "ts": pa.array(np.arange(rows, dtype=np.int64) * 1000, pa.timestamp("us")),
            "comment": pa.array([f"item {i % 9973} of order {i // 7}" for i in range(rows)]),
        }
    )


def ipc_size(batch: pa.RecordBatch) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().size


def ingest(node: Node, batch: pa.RecordBatch, writers: int, total_bytes: int) -> dict:
    per_writer = max(1, total_bytes // (writers * batch.nbytes))
    errors = []

    def write(n: int):
        try:
            client = flight.FlightClient(node.uri)
            w, _ = client.do_put(flight.FlightDescriptor.for_path(f"bench_{writers}"), batch.schema)
            for _ in range(per_writer):
                w.write_batch(batch)
            w.close()
            client.close()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    batches = per_writer * writers
    return {
        "writers": writers,
        "rows_per_s": batches * batch.num_rows / elapsed,
        "arrow_mb_per_s": batches * batch.nbytes / elapsed / 1e6,
        "seconds": elapsed,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows-per-batch", type=int, default=65536)
    parser.add_argument("--mb-per-run", type=int, default=512, help="Arrow MB sent per measurement")
    parser.add_argument("--json", default=str(Path.home() / ".cache/skein/bench-ingest.json"))
    args = parser.parse_args()

    batch = make_batch(args.rows_per_batch)
    record = ipc_size(batch)
    results = {"rows_per_batch": batch.num_rows, "arrow_bytes_per_batch": batch.nbytes,
               "wal_record_bytes": record, "runs": []}
    with tempfile.TemporaryDirectory(dir=Path.home() / ".cache/skein") as tmp:
        tmp = Path(tmp)
        raw = raw_fdatasync(tmp, record, 5.0)
        results["raw_fdatasync_mb_per_s"] = raw / 1e6
        for sync in ["fsync", "none"]:
            for writers in [1, 4, 16]:
                data = tmp / f"data-{sync}-{writers}"
                node = Node(data, "--wal-sync", sync).start()
                try:
                    run = ingest(node, batch, writers, args.mb_per_run * 1_000_000)
                finally:
                    node.stop()
                run["wal_sync"] = sync
                # WAL bytes are IPC bytes; compare like with like.
                run["wal_mb_per_s"] = run["arrow_mb_per_s"] * record / batch.nbytes
                run["ratio_to_raw_fdatasync"] = run["wal_mb_per_s"] / results["raw_fdatasync_mb_per_s"]
                results["runs"].append(run)

    print(f"batch: {batch.num_rows} rows, {batch.nbytes / 1e6:.1f} MB Arrow, "
          f"{record / 1e6:.1f} MB per WAL record")
    print(f"raw write+fdatasync at that size: {results['raw_fdatasync_mb_per_s']:.0f} MB/s")
    print(f"{'wal-sync':>8} {'writers':>7} {'rows/s':>12} {'Arrow MB/s':>10} {'x raw fdatasync':>15}")
    for r in results["runs"]:
        print(f"{r['wal_sync']:>8} {r['writers']:>7} {r['rows_per_s']:>12,.0f} "
              f"{r['arrow_mb_per_s']:>10.0f} {r['ratio_to_raw_fdatasync']:>15.2f}")
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
