"""skein's benchmark: every figure next to its baseline, measured side by side in one run on one
machine. Run it with scripts/bench.sh; it prints a table and writes JSON.

Sections (all by default; pick with --only):
  transport  DoGet / DoPut of a 4×int64 table: skein, a minimal pyarrow Flight server, raw TCP
  ingest     ADBC bulk ingest of TPC-H lineitem, durable and --wal-sync none, against DuckDB in
             process appending the same Arrow data, and raw write+fdatasync bandwidth
  tpch       the 22 TPC-H queries through ADBC: skein, DuckDB in process on the same Parquet
             files (same threads), ROAPI (DataFusion) on the same files
  fetch      SELECT * FROM lineitem through ADBC against DuckDB's in-process Arrow export
  latency    SELECT 1 through arrow-rs's Flight SQL client, 1 and 8 concurrent clients
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Node, _len_field, flight_sql_any, free_port  # noqa: E402

THREADS = 2
TPCH_TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def timed(f, repeat=3):
    """Median seconds of `repeat` runs of f (after one warm-up run); returns (seconds, last result)."""
    result = f()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = f()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def ingest_table(conn, name: str, table: pa.Table, mode="create"):
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=65536))
    with conn.cursor() as cur:
        cur.adbc_ingest(name, reader, mode=mode)


def flush(node: Node):
    node.flush()


# ---------------------------------------------------------------------------------------------
# transport


class PyArrowFlightServer(flight.FlightServerBase):
    """The smallest useful Flight server: serves one in-memory table, swallows uploads."""

    def __init__(self, location, table):
        super().__init__(location)
        self.table = table

    def get_flight_info(self, context, descriptor):
        return flight.FlightInfo(self.table.schema, descriptor,
                                 [flight.FlightEndpoint(b"t", [])], self.table.num_rows, -1)

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)

    def do_put(self, context, descriptor, reader, writer):
        for _ in reader:
            pass


def pyarrow_server_main(port: int, rows: int):
    table = four_int64(rows)
    server = PyArrowFlightServer(f"grpc://127.0.0.1:{port}", table)
    print("ready", flush=True)
    server.serve()


def four_int64(rows: int) -> pa.Table:
    return pa.table({f"c{i}": np.arange(rows, dtype=np.int64) * (i + 1) for i in range(4)})


def read_flight(client: flight.FlightClient, descriptor) -> int:
    info = client.get_flight_info(descriptor)
    total = 0
    for endpoint in info.endpoints:
        reader = client.do_get(endpoint.ticket)
        for chunk in reader:
            total += chunk.data.nbytes
    return total


def put_flight(client: flight.FlightClient, descriptor, table: pa.Table):
    writer, _ = client.do_put(descriptor, table.schema)
    for batch in table.to_batches(max_chunksize=65536):
        writer.write_batch(batch)
    writer.close()


def raw_tcp_bandwidth(nbytes: int) -> float:
    """Bytes/s of one loopback TCP stream from a sender thread to a receiver."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    block = memoryview(bytearray(4 << 20))

    def send():
        conn, _ = listener.accept()
        sent = 0
        while sent < nbytes:
            sent += conn.send(block[: min(len(block), nbytes - sent)])
        conn.close()

    sender = threading.Thread(target=send)
    sender.start()
    buf = bytearray(4 << 20)
    with socket.create_connection(("127.0.0.1", port)) as s:
        start = time.perf_counter()
        got = 0
        while got < nbytes:
            n = s.recv_into(buf)
            if n == 0:
                break
            got += n
        elapsed = time.perf_counter() - start
    sender.join()
    listener.close()
    return got / elapsed


def bench_transport(work: Path, args) -> dict:
    rows = args.transport_rows
    table = four_int64(rows)
    nbytes = table.nbytes
    out = {"rows": rows, "arrow_mb": nbytes / 1e6}
    # The rows stay in the node's memory (as the pyarrow server's do), so DoGet measures the
    # transport; the same fetch from the flushed Parquet files is reported beside it.
    node = Node(work / "transport", "--flush-rows", "1000000000", "--flush-bytes", str(1 << 40),
                "--max-buffer-bytes", str(1 << 40)).start()
    try:
        with node.connect() as conn:
            ingest_table(conn, "t4", table)
        client = node.flight_client()
        query = flight.FlightDescriptor.for_command(
            flight_sql_any("CommandStatementQuery", _len_field(1, b"SELECT * FROM t4")))
        secs, got = timed(lambda: read_flight(client, query))
        out["skein_doget_mb_s"] = got / secs / 1e6
        flush(node)
        secs, got = timed(lambda: read_flight(client, query))
        out["skein_doget_parquet_mb_s"] = got / secs / 1e6
        secs, _ = timed(lambda: put_flight(client, flight.FlightDescriptor.for_path("t4_put"), table), repeat=2)
        out["skein_doput_mb_s"] = nbytes / secs / 1e6
        client.close()
    finally:
        node.stop()
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--pyarrow-server", str(port), str(rows)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        # The server may still be binding: retry the first call for a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get_flight_info(flight.FlightDescriptor.for_path("t"))
                break
            except flight.FlightUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        secs, got = timed(lambda: read_flight(client, flight.FlightDescriptor.for_path("t")))
        out["pyarrow_doget_mb_s"] = got / secs / 1e6
        secs, _ = timed(lambda: put_flight(client, flight.FlightDescriptor.for_path("t"), table), repeat=2)
        out["pyarrow_doput_mb_s"] = nbytes / secs / 1e6
        client.close()
    finally:
        proc.kill()
        proc.wait()
    out["raw_tcp_mb_s"] = raw_tcp_bandwidth(max(nbytes, 1 << 30)) / 1e6
    out["doget_vs_pyarrow"] = out["skein_doget_mb_s"] / out["pyarrow_doget_mb_s"]
    out["doget_vs_raw_tcp"] = out["skein_doget_mb_s"] / out["raw_tcp_mb_s"]
    out["doput_vs_pyarrow"] = out["skein_doput_mb_s"] / out["pyarrow_doput_mb_s"]
    return out


# ---------------------------------------------------------------------------------------------
# TPC-H data, ingest, queries, fetch


def tpch_data(work: Path, sf: float) -> Path:
    out = Path(os.environ.get("SKEIN_BENCH_DATA", Path.home() / ".cache/skein/bench")) / f"tpch-sf{sf:g}"
    if not (out / "lineitem.parquet").exists():
        out.mkdir(parents=True, exist_ok=True)
        tpchgen = Path(sys.executable).parent / "tpchgen-cli"
        subprocess.run([str(tpchgen), "parquet", "-s", f"{sf:g}", "--output-dir", str(out)], check=True)
    return out


def raw_fdatasync(directory: Path, write_bytes: int, seconds: float) -> float:
    block = os.urandom(write_bytes)
    path = directory / "raw-fdatasync.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.write(fd, block)
            os.fdatasync(fd)
            written += write_bytes
        return written / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def bench_ingest(work: Path, data: Path, args) -> dict:
    lineitem = pq.read_table(data / "lineitem.parquet")
    out = {"rows": lineitem.num_rows, "arrow_mb": lineitem.nbytes / 1e6}
    for sync in ["fsync", "none"]:
        node = Node(work / f"ingest-{sync}", "--wal-sync", sync).start()
        try:
            with node.connect() as conn:
                start = time.perf_counter()
                ingest_table(conn, "lineitem", lineitem)
                secs = time.perf_counter() - start
        finally:
            node.stop()
        out[f"skein_{sync}_rows_s"] = lineitem.num_rows / secs
        out[f"skein_{sync}_mb_s"] = lineitem.nbytes / secs / 1e6
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    con.register("src", lineitem)
    con.execute("CREATE TABLE lineitem AS SELECT * FROM src LIMIT 0")
    start = time.perf_counter()
    con.execute("INSERT INTO lineitem SELECT * FROM src")
    secs = time.perf_counter() - start
    out["duckdb_append_mb_s"] = lineitem.nbytes / secs / 1e6
    batch_bytes = lineitem.slice(0, 65536).nbytes
    out["raw_fdatasync_mb_s"] = raw_fdatasync(work, batch_bytes, 5.0) / 1e6
    out["none_vs_duckdb_append"] = out["skein_none_mb_s"] / out["duckdb_append_mb_s"]
    out["fsync_vs_raw_fdatasync"] = out["skein_fsync_mb_s"] / out["raw_fdatasync_mb_s"]
    return out


def load_tpch(node: Node, data: Path):
    with node.connect() as conn:
        for name in TPCH_TABLES:
            ingest_table(conn, name, pq.read_table(data / f"{name}.parquet"))
    flush(node)


def table_files(data_dir: Path) -> dict:
    """Each table's Parquet files, from the node's catalog."""
    catalog = json.loads((data_dir / "catalog.json").read_text())
    return {
        t["name"]: [str(data_dir / "objects" / f["key"]) for f in t["files"]]
        for t in catalog["tables"].values()
    }


def tpch_queries() -> dict:
    qdir = ROOT / "tests" / "tpch"
    return {p.stem: p.read_text() for p in sorted(qdir.glob("q*.sql"))}


def adbc_run(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def sorted_rows(t: pa.Table):
    def norm(v):
        return round(float(v), 2) if isinstance(v, float) or hasattr(v, "as_tuple") else v
    return sorted((tuple(norm(v) for v in r.values()) for r in t.to_pylist()), key=repr)


def bench_tpch(work: Path, data: Path, args) -> dict:
    queries = tpch_queries()
    node = Node(work / "tpch", "--flush-rows", "100000000", "--flush-bytes", "100000000000",
                "--max-buffer-bytes", "100000000000").start()
    results = {}
    try:
        load_tpch(node, data)
        files = table_files(work / "tpch")
        con = duckdb.connect()
        con.execute(f"SET threads = {THREADS}")
        for name, paths in files.items():
            listed = ", ".join(f"'{p}'" for p in paths)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}])")
        roapi = start_roapi(work, files)
        try:
            with node.connect() as sk, flightsql.connect(roapi["uri"], autocommit=True) as ro:
                for q, sql in queries.items():
                    row = {}
                    row["duckdb_s"], want = timed(lambda: con.sql(sql).to_arrow_table(), args.repeat)
                    row["skein_s"], got = timed(lambda: adbc_run(sk, sql), args.repeat)
                    row["same_answer"] = sorted_rows(got) == sorted_rows(want)
                    try:
                        row["roapi_s"], _ = timed(lambda: adbc_run(ro, sql), args.repeat)
                    except Exception as e:  # DataFusion's dialect differs on a few
                        row["roapi_error"] = str(e).splitlines()[0][:120]
                    results[q] = row
                    print(f"  {q}: skein {row['skein_s']:.3f}s duckdb {row['duckdb_s']:.3f}s "
                          f"roapi {row.get('roapi_s', float('nan')):.3f}s same={row['same_answer']}",
                          flush=True)
        finally:
            roapi["proc"].kill()
            roapi["proc"].wait()
        # Large result fetch, on the same loaded node.
        with node.connect() as sk:
            fetch = {}
            fetch["skein_s"], got = timed(lambda: adbc_run(sk, "SELECT * FROM lineitem"), 2)
            fetch["duckdb_s"], want = timed(
                lambda: con.sql("SELECT * FROM lineitem").to_arrow_table(), 2)
            fetch["rows"] = got.num_rows
            fetch["arrow_mb"] = want.nbytes / 1e6
            fetch["ratio"] = fetch["duckdb_s"] / fetch["skein_s"]
    finally:
        node.stop()
    skein_sum = sum(r["skein_s"] for r in results.values())
    duck_sum = sum(r["duckdb_s"] for r in results.values())
    ro_ok = [r for r in results.values() if "roapi_s" in r]
    return {
        "queries": results,
        "skein_sum_s": skein_sum,
        "duckdb_sum_s": duck_sum,
        "skein_vs_duckdb": skein_sum / duck_sum,
        "roapi_answered": len(ro_ok),
        "faster_than_roapi": sum(1 for r in ro_ok if r["skein_s"] < r["roapi_s"]),
        "all_same_answers": all(r["same_answer"] for r in results.values()),
        "fetch": fetch,
    }


def start_roapi(work: Path, files: dict) -> dict:
    roapi = Path(sys.executable).parent / "roapi"
    port, http, pg = free_port(), free_port(), free_port()
    cmd = [str(roapi), "--addr-flight-sql", f"127.0.0.1:{port}", "-a", f"127.0.0.1:{http}",
           "-p", f"127.0.0.1:{pg}"]
    for name, paths in files.items():
        cmd += ["-t", f"{name}={Path(paths[0]).parent},format=parquet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RUST_LOG": "error"})
    deadline = time.monotonic() + 120
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("roapi did not start")
            time.sleep(0.1)
    return {"proc": proc, "uri": f"grpc://127.0.0.1:{port}"}


# ---------------------------------------------------------------------------------------------
# latency


def bench_latency(work: Path, args) -> dict:
    tool = Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "examples" / "select1_latency"
    node = Node(work / "latency").start()
    out = {}
    try:
        for clients, iterations in [(1, 2000), (8, 500)]:
            res = subprocess.run([str(tool), node.flight_addr, str(clients), str(iterations)],
                                 check=True, capture_output=True, text=True)
            out[f"clients_{clients}"] = json.loads(res.stdout)
    finally:
        node.stop()
    return out


# ---------------------------------------------------------------------------------------------


def report(results: dict):
    lines = []
    t = results.get("transport")
    if t:
        lines += [
            f"transport ({t['arrow_mb']:.0f} MB of 4×int64)",
            f"  DoGet  skein {t['skein_doget_mb_s']:8.0f} MB/s | pyarrow Flight {t['pyarrow_doget_mb_s']:8.0f} MB/s"
            f" | raw TCP {t['raw_tcp_mb_s']:8.0f} MB/s | ×pyarrow {t['doget_vs_pyarrow']:.2f} (goal ≥1.3)"
            f" ×raw {t['doget_vs_raw_tcp']:.2f} (goal ≥0.6)",
            f"  DoGet  skein from its Parquet files {t['skein_doget_parquet_mb_s']:8.0f} MB/s",
            f"  DoPut  skein {t['skein_doput_mb_s']:8.0f} MB/s | pyarrow Flight {t['pyarrow_doput_mb_s']:8.0f} MB/s"
            f" | ×pyarrow {t['doput_vs_pyarrow']:.2f}",
        ]
    i = results.get("ingest")
    if i:
        lines += [
            f"ingest (TPC-H lineitem, {i['rows']:,} rows, {i['arrow_mb']:.0f} MB Arrow, ADBC)",
            f"  durable        {i['skein_fsync_mb_s']:6.0f} MB/s {i['skein_fsync_rows_s']:12,.0f} rows/s"
            f" | raw fdatasync {i['raw_fdatasync_mb_s']:6.0f} MB/s | ×raw {i['fsync_vs_raw_fdatasync']:.2f} (goal ≥0.8)",
            f"  wal-sync none  {i['skein_none_mb_s']:6.0f} MB/s {i['skein_none_rows_s']:12,.0f} rows/s"
            f" | DuckDB append {i['duckdb_append_mb_s']:6.0f} MB/s | ×DuckDB {i['none_vs_duckdb_append']:.2f} (goal ≥0.7)",
        ]
    q = results.get("tpch")
    if q:
        lines.append(f"TPC-H SF{results['sf']:g} (seconds, median of {results['repeat']} warm runs, {THREADS} threads)")
        lines.append(f"  {'query':6} {'skein':>8} {'duckdb':>8} {'roapi':>8}  same answer")
        for name, r in q["queries"].items():
            ro = f"{r['roapi_s']:8.3f}" if "roapi_s" in r else f"{'error':>8}"
            lines.append(f"  {name:6} {r['skein_s']:8.3f} {r['duckdb_s']:8.3f} {ro}  {r['same_answer']}")
        lines.append(f"  sum    {q['skein_sum_s']:8.3f} {q['duckdb_sum_s']:8.3f}   ×DuckDB {q['skein_vs_duckdb']:.2f}"
                     f" (goal ≤1.05); faster than ROAPI on {q['faster_than_roapi']} of {q['roapi_answered']}"
                     f" it answered (goal ≥20 of 22)")
        f = q["fetch"]
        lines.append(f"fetch SELECT * FROM lineitem ({f['rows']:,} rows, {f['arrow_mb']:.0f} MB): skein {f['skein_s']:.2f}s"
                     f" | DuckDB Arrow export {f['duckdb_s']:.2f}s | ×{f['ratio']:.2f} (goal ≥0.8)")
    lat = results.get("latency")
    if lat:
        for k, v in lat.items():
            lines.append(f"SELECT 1, {v['clients']} client(s): p50 {v['p50_us']:.0f} µs, p99 {v['p99_us']:.0f} µs,"
                         f" {v['qps']:.0f} queries/s (goal p50 ≤300 µs)")
    return "\n".join(lines)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--pyarrow-server":
        pyarrow_server_main(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per query (after a warm-up)")
    parser.add_argument("--transport-rows", type=int, default=16_000_000)
    parser.add_argument("--only", default="transport,ingest,tpch,latency",
                        help="comma-separated sections (tpch includes fetch)")
    parser.add_argument("--json", default=str(Path.home() / ".cache/skein/bench.json"))
    args = parser.parse_args()
    sections = set(args.only.split(","))
    results = {"sf": args.sf, "repeat": args.repeat, "machine": machine()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=Path.home() / ".cache/skein") as tmp:
        work = Path(tmp)
        if "transport" in sections:
            print("transport…", flush=True)
            results["transport"] = bench_transport(work, args)
        if sections & {"ingest", "tpch"}:
            data = tpch_data(work, args.sf)
        if "ingest" in sections:
            print("ingest…", flush=True)
            results["ingest"] = bench_ingest(work, data, args)
        if "tpch" in sections:
            print("tpch…", flush=True)
            results["tpch"] = bench_tpch(work, data, args)
        if "latency" in sections:
            print("latency…", flush=True)
            results["latency"] = bench_latency(work, args)
    results["seconds"] = time.perf_counter() - started
    text = report(results)
    print()
    print(text)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\n{results['seconds']:.0f} s; written to {args.json}")


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB"


if __name__ == "__main__":
    main()
