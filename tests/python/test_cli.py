"""The `skein` command-line client, run as a real process against real nodes.

Data goes in with `skein ingest` and is checked with an independent client (ADBC) against the
source; results come out of `skein sql` in every format and are read back with pyarrow and
compared with DuckDB in process over the same source data.
"""

import csv
import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

from conftest import cli_bin, free_port, oracle, query, rows

RUN_DEADLINE_S = 300
PROMPT = "skein> "


@pytest.fixture
def env(tmp_path):
    """An environment without the caller's SKEIN_* settings, config file or history."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")}
    e["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    e["SKEIN_HISTORY"] = str(tmp_path / "history")
    return e


def skein(env, node, *args, stdin=None, extra_env=None, timeout=RUN_DEADLINE_S):
    """Runs `skein --uri <node> ARGS`; returns the completed process (text output)."""
    uri = ["--uri", node.uri] if node is not None else []
    e = dict(env, **(extra_env or {}))
    return subprocess.run(
        [cli_bin(), *uri, *args],
        input=stdin,
        capture_output=True,
        text=isinstance(stdin, str) or stdin is None,
        env=e,
        timeout=timeout,
    )


def ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def failed(result, code=1) -> str:
    assert result.returncode == code, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stderr


def source_table(n=500) -> pa.Table:
    """Mixed types, nulls, and strings that need quoting in CSV."""
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([f"name {i}, \"q\" é" if i % 7 else f"n{i}" for i in range(n)], pa.string()),
            "score": pa.array([None if i % 11 == 0 else i * 0.25 for i in range(n)], pa.float64()),
            "flag": pa.array([i % 3 == 0 for i in range(n)], pa.bool_()),
            "day": pa.array([19000 + i % 400 for i in range(n)], pa.date32()),
        }
    )


def server_table(node, table: str, columns="*") -> pa.Table:
    with node.connect() as conn:
        return query(conn, f"SELECT {columns} FROM {table} ORDER BY id")


def assert_table_equals(got: pa.Table, want: pa.Table):
    assert got.column_names == want.column_names
    assert rows(got.cast(want.schema)) == rows(want)


def write_jsonl(table: pa.Table, path: Path):
    with open(path, "w") as f:
        for row in table.to_pylist():
            f.write(json.dumps({k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}) + "\n")


def write_ipc(table: pa.Table, path: Path, stream: bool):
    with pa.OSFile(str(path), "wb") as sink:
        writer = ipc.new_stream(sink, table.schema) if stream else ipc.new_file(sink, table.schema)
        for batch in table.to_batches(max_chunksize=128):
            writer.write_batch(batch)
        writer.close()


ACKED = re.compile(r"^(\d+) rows acknowledged into (\S+)", re.M)


def acked(out: str) -> int:
    m = ACKED.search(out)
    assert m, out
    return int(m.group(1))


# ---------------------------------------------------------------------------------------------
# ingest


def test_ingest_each_file_format(node, env, tmp_path):
    src = source_table()
    files = {
        "parquet": tmp_path / "src.parquet",
        "csv": tmp_path / "src.csv",
        "json": tmp_path / "src.jsonl",
        "ipc_file": tmp_path / "src.arrow",
        "ipc_stream": tmp_path / "src.arrows",
    }
    pq.write_table(src, files["parquet"], row_group_size=100)
    pacsv.write_csv(src, files["csv"])
    write_jsonl(src, files["json"])
    write_ipc(src, files["ipc_file"], stream=False)
    write_ipc(src, files["ipc_stream"], stream=True)
    for kind, path in files.items():
        extra = ["--column", "day=date"] if kind == "json" else []  # JSON has no date type
        out = ok(skein(env, node, "ingest", str(path), "--table", f"t_{kind}", "--batch-rows", "64", *extra))
        assert acked(out) == src.num_rows
        assert_table_equals(server_table(node, f"t_{kind}"), src)
    # Standard input, with --format; Parquet and the IPC file format are spooled to disk.
    for kind, fmt, path in [
        ("csv", "csv", files["csv"]),
        ("parquet", "parquet", files["parquet"]),
        ("stream", "arrow", files["ipc_stream"]),
        ("file", "arrow", files["ipc_file"]),
    ]:
        out = ok(skein(env, node, "ingest", "-", "-t", f"stdin_{kind}", "--format", fmt, stdin=path.read_bytes()))
        assert acked(out.decode()) == src.num_rows
        assert_table_equals(server_table(node, f"stdin_{kind}"), src)


def test_ingest_schema_inference_and_overrides(node, env, tmp_path):
    path = tmp_path / "typed.csv"
    path.write_text("id;amount;ts;code\n1;10.5;2024-01-02T03:04:05;007\n2;;2024-02-03T00:00:00;010\n")
    out = ok(
        skein(env, node, "ingest", str(path), "-t", "typed", "--delimiter", ";",
              "-c", "amount=decimal(10,2)", "-c", "code=string", "-c", "id=int32")
    )
    assert acked(out) == 2
    described = ok(skein(env, node, "describe", "typed", "-f", "csv"))
    types = {r["column"]: r["type"] for r in csv.DictReader(io.StringIO(described))}
    assert types["id"] == "Int32"
    assert types["amount"] == "Decimal128(10, 2)"
    assert types["code"] == "Utf8"
    assert types["ts"].startswith("Timestamp(")
    got = server_table(node, "typed")
    assert got.column("code").to_pylist() == ["007", "010"]
    assert [str(v) if v is not None else None for v in got.column("amount").to_pylist()] == ["10.50", None]
    # A type that does not exist, and a column that does not exist, are refused before sending.
    err = failed(skein(env, node, "ingest", str(path), "-t", "typed2", "--delimiter", ";", "-c", "id=integr"))
    assert "integr" in err and "int64" in err
    err = failed(skein(env, node, "ingest", str(path), "-t", "typed2", "--delimiter", ";", "-c", "nope=int64"))
    assert "nope" in err and "id, amount, ts, code" in err


def test_ingest_modes(node, env, tmp_path):
    a = pa.table({"id": pa.array(range(10), pa.int64())})
    b = pa.table({"id": pa.array(range(100, 103), pa.int64())})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    fa, fb = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")

    err = failed(skein(env, node, "ingest", fa, "-t", "m", "--mode", "append"))
    assert err.startswith("error: ingest into m failed:") and "0 rows were acknowledged" in err
    assert acked(ok(skein(env, node, "ingest", fa, "-t", "m", "--mode", "create"))) == 10
    err = failed(skein(env, node, "ingest", fa, "-t", "m", "--mode", "create"))
    assert "0 rows were acknowledged" in err
    assert acked(ok(skein(env, node, "ingest", fb, "-t", "m", "--mode", "append"))) == 3
    assert acked(ok(skein(env, node, "ingest", fb, "-t", "m"))) == 3  # create-append
    assert server_table(node, "m").column("id").to_pylist() == list(range(10)) + [100, 100, 101, 101, 102, 102]
    assert acked(ok(skein(env, node, "ingest", fb, "-t", "m", "--mode", "replace"))) == 3
    assert server_table(node, "m").column("id").to_pylist() == [100, 101, 102]


def test_parallel_puts_and_several_files(node, env, tmp_path):
    parts = []
    for k in range(3):
        t = pa.table({
            "id": pa.array(range(k * 7000, (k + 1) * 7000), pa.int64()),
            "v": pa.array([f"v{i % 97}" for i in range(7000)], pa.string()),
        })
        path = tmp_path / f"part{k}.csv"
        pacsv.write_csv(t, path)
        parts.append(str(path))
    out = ok(skein(env, node, "ingest", *parts, "-t", "par", "--mode", "create", "--batch-rows", "500",
                   "--batches-per-put", "3", "--concurrency", "4"))
    assert acked(out) == 21000
    files = ", ".join(f"'{p}'" for p in parts)
    want = duckdb.sql(
        f"SELECT count(*) AS n, sum(id) AS s, count(DISTINCT v) AS d FROM read_csv([{files}])"
    ).fetchall()
    with node.connect() as conn:
        got = query(conn, "SELECT count(*) AS n, sum(id) AS s, count(DISTINCT v) AS d FROM par")
    assert rows(got) == want


def test_failure_reports_the_rows_acknowledged_before_it(node, env, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("id\n" + "".join(f"{i}\n" for i in range(1000)))
    bad = tmp_path / "bad.csv"
    bad.write_text("id\nnot-a-number\n")
    err = failed(skein(env, node, "ingest", str(good), str(bad), "-t", "partial", "--batch-rows", "100",
                       "--batches-per-put", "2"))
    assert err.startswith("error: ingest into partial failed:"), err
    m = re.search(r"\((\d+) rows were acknowledged before the failure\)", err)
    assert m, err
    with node.connect() as conn:
        count = query(conn, "SELECT count(*) AS n FROM partial").column("n")[0].as_py()
    assert int(m.group(1)) == count == 1000


def test_bad_input_files(node, env, tmp_path):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not a parquet file")
    err = failed(skein(env, node, "ingest", str(corrupt), "-t", "x"))
    assert "error:" in err and "corrupt.parquet" in err
    err = failed(skein(env, node, "ingest", str(tmp_path / "missing.csv"), "-t", "x"))
    assert "missing.csv" in err and "No such file" in err
    unknown = tmp_path / "data.xyz"
    unknown.write_text("a\n1\n")
    err = failed(skein(env, node, "ingest", str(unknown), "-t", "x"))
    assert "--format" in err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    err = failed(skein(env, node, "ingest", str(ragged), "-t", "x"))
    assert err.startswith("error: ingest into x failed: cannot decode") and "ragged.csv" in err
    assert "rows were acknowledged before the failure" in err
    # Standard input without --format is a usage error.
    failed(skein(env, node, "ingest", "-", "-t", "x", stdin="a\n1\n"), code=2)


RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def write_big_csv(path: Path, target_bytes: int) -> int:
    """Writes a CSV of about `target_bytes` in chunks; returns the number of rows."""
    import pyarrow.compute as pc

    chunk = 200_000
    written = 0
    n = 0
    with pacsv.CSVWriter(str(path), pa.schema([("id", pa.int64()), ("name", pa.string()),
                                               ("score", pa.float64()), ("city", pa.string())])) as w:
        while written < target_bytes:
            ids = pa.array(range(n, n + chunk), pa.int64())
            names = pc.binary_join_element_wise("user-", pc.cast(pc.multiply(ids, 7919), pa.string()), "")
            scores = pc.divide(pc.cast(pc.bit_wise_and(ids, 1023), pa.float64()), 4.0)
            cities = pc.take(pa.array(["Oslo", "Lima", "Pune", "Quito", "Hanoi"]), pc.bit_wise_and(ids, 3))
            w.write_table(pa.table({"id": ids, "name": names, "score": scores, "city": cities}))
            n += chunk
            written = path.stat().st_size
    return n


def test_large_csv_is_streamed_not_loaded(node, env, tmp_path):
    path = tmp_path / "big.csv"
    n = write_big_csv(path, 200 * 1024 * 1024)
    size = path.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, cli_bin(), "--uri", node.uri, "ingest", str(path), "-t", "big"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert acked(proc.stdout) == n
    peak = int(re.search(r"peak_rss_kib (\d+)", proc.stderr).group(1)) * 1024
    # The whole file would not fit: the client holds a few batches at a time.
    assert peak < size / 3, f"peak RSS {peak} bytes for a {size}-byte file"
    agg = "SELECT count(*) AS n, sum(id) AS s, sum(score) AS sc, count(DISTINCT name) AS dn, " \
          "min(city) AS c1, max(city) AS c2"
    want = duckdb.sql(f"{agg} FROM read_csv('{path}')").fetchall()
    out = ok(skein(env, node, "sql", f"{agg} FROM big", "-f", "json"))
    got = [tuple(r.values()) for r in json.loads(out)]
    assert got == want


# ---------------------------------------------------------------------------------------------
# queries and output formats


@pytest.fixture
def loaded(node, env, tmp_path):
    src = source_table(3000)
    path = tmp_path / "load.parquet"
    pq.write_table(src, path)
    ok(skein(env, node, "ingest", str(path), "-t", "src"))
    return src


SQL = "SELECT id, name, score, flag, day FROM src WHERE id % 3 <> 1 ORDER BY id"


def test_output_formats_match_duckdb(node, env, tmp_path, loaded):
    want = oracle({"src": loaded}, SQL)
    # CSV, to standard output and to a file.
    out = ok(skein(env, node, "sql", SQL, "--format", "csv"))
    got = pacsv.read_csv(io.BytesIO(out.encode()), convert_options=pacsv.ConvertOptions(column_types=want.schema))
    assert rows(got) == rows(want)
    ok(skein(env, node, "sql", SQL, "-f", "csv", "-o", str(tmp_path / "o.csv")))
    got = pacsv.read_csv(tmp_path / "o.csv", convert_options=pacsv.ConvertOptions(column_types=want.schema))
    assert rows(got) == rows(want)
    # JSON: one array; nulls are left out of the objects.
    expected = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in want.to_pylist()]
    got = json.loads(ok(skein(env, node, "sql", SQL, "-f", "json")))
    assert [{k: r.get(k) for k in want.column_names} for r in got] == expected
    # NDJSON, read by pyarrow.
    ok(skein(env, node, "sql", SQL, "-f", "ndjson", "-o", str(tmp_path / "o.ndjson")))
    as_text = pa.schema([f.with_type(pa.string()) if f.type == pa.date32() else f for f in want.schema])
    got = pajson.read_json(tmp_path / "o.ndjson", parse_options=pajson.ParseOptions(explicit_schema=as_text))
    assert rows(got.cast(want.schema)) == rows(want)
    # Arrow IPC stream, to a pipe and to a file; Parquet to a file.
    res = skein(env, node, "sql", SQL, "-f", "arrow", stdin=b"")
    assert res.returncode == 0, res.stderr
    got = ipc.open_stream(res.stdout).read_all()
    assert got.schema.names == want.schema.names
    assert rows(got.cast(want.schema)) == rows(want)
    ok(skein(env, node, "sql", SQL, "-f", "arrow", "-o", str(tmp_path / "o.arrows")))
    assert rows(ipc.open_stream(pa.OSFile(str(tmp_path / "o.arrows"))).read_all().cast(want.schema)) == rows(want)
    ok(skein(env, node, "sql", SQL, "-f", "parquet", "-o", str(tmp_path / "o.parquet")))
    assert rows(pq.read_table(tmp_path / "o.parquet").cast(want.schema)) == rows(want)


def parse_table(text: str) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and footer of the table format (a header repeated by a wider table that
    continues the result is dropped)."""
    lines = text.rstrip("\n").split("\n")
    cells = [[c.strip() for c in l.strip("│").split("┆")] for l in lines if l.startswith("│")]
    header = cells[0]
    return header, [c for c in cells[1:] if c != header], lines[-1]


def table_segments(text: str) -> list[list[str]]:
    """The lines of each table in the output, from top border to bottom border."""
    segments, current = [], None
    for line in text.split("\n"):
        if line.startswith("╭"):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.startswith("╰"):
                segments.append(current)
                current = None
    return segments


def test_table_format_streams_in_aligned_chunks(node, env, loaded):
    sql = "SELECT id, name FROM src ORDER BY id"
    want = oracle({"src": loaded}, sql)
    out = ok(skein(env, node, "sql", sql))
    header, body, footer = parse_table(out)
    assert header == ["id", "name"]
    assert footer == f"({want.num_rows} rows)"
    assert body == [[str(r["id"]), r["name"]] for r in want.to_pylist()]
    # Rows come in chunks of 1000; the first fixes the widths, and ids of four digits after it
    # start one wider table. Every line of a table has its width.
    segments = table_segments(out)
    assert len(segments) == 2, out[:3000]
    for seg in segments:
        assert len({len(line) for line in seg}) == 1
    assert len(segments[1][0]) > len(segments[0][0])
    empty = ok(skein(env, node, "sql", "SELECT id FROM src WHERE id < 0"))
    header, body, footer = parse_table(empty)
    assert header == ["id"] and body == [] and footer == "(0 rows)"


def test_empty_results_keep_their_schema(node, env, loaded):
    sql = "SELECT id, name FROM src WHERE id < 0"
    assert ok(skein(env, node, "sql", sql, "-f", "csv")) == "id,name\n"
    assert json.loads(ok(skein(env, node, "sql", sql, "-f", "json"))) == []
    res = skein(env, node, "sql", sql, "-f", "arrow", stdin=b"")
    table = ipc.open_stream(res.stdout).read_all()
    assert table.num_rows == 0 and table.schema.names == ["id", "name"]


def test_statements_ddl_and_timing(node, env):
    out = ok(skein(env, node, "sql", "CREATE TABLE d (x BIGINT); INSERT INTO d VALUES (1), (2); "
                                     "SELECT sum(x) AS s FROM d", "-f", "csv", "--timing"))
    assert out.strip().endswith("s\n3")
    res = skein(env, node, "sql", "SELECT 1", "--timing")
    assert re.search(r"^Time: [0-9.]+ ms$", res.stderr, re.M), res.stderr


def test_output_closed_early(node, env):
    """`skein sql … | head` stops quietly and cancels the rest."""
    p = subprocess.Popen([cli_bin(), "--uri", node.uri, "sql", "SELECT * FROM range(100000000) t(x)", "-f", "csv"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout.readline() == b"x\n"
    assert p.stdout.readline() == b"0\n"
    p.stdout.close()
    assert p.wait(RUN_DEADLINE_S) == 0
    assert b"error" not in p.stderr.read()


# ---------------------------------------------------------------------------------------------
# errors and cancellation


def test_error_exit_codes(node, env, tmp_path):
    err = failed(skein(env, node, "sql", "SELEC 1"))
    assert err.startswith("error: query failed:") and "syntax error" in err
    err = failed(skein(env, node, "sql", "SELECT * FROM no_such_table"))
    assert err.startswith("error: query failed:") and "no_such_table" in err
    err = failed(skein(env, node, "describe", "no_such_table"))
    assert "no table named no_such_table" in err
    err = failed(skein(env, node, "action", "no.such.action"))
    assert "no.such.action" in err
    dead = f"grpc://127.0.0.1:{free_port()}"
    err = failed(skein(env, None, "--uri", dead, "sql", "SELECT 1"))
    assert err.startswith(f"error: cannot connect to {dead}")
    err = failed(skein(env, None, "--uri", "127.0.0.1:5", "tables"))
    assert "grpc://host:port" in err
    failed(skein(env, node, "sql"), code=2)
    failed(skein(env, node, "--no-such-flag"), code=2)
    failed(skein(env, node, "sql", "SELECT 1", "-f", "xml"), code=2)


def do_action_count(node) -> int:
    m = re.search(r'^skein_requests_total\{code="Ok",method="DoAction"\} (\d+)$', node.http_get("/metrics"), re.M)
    return int(m.group(1)) if m else 0


def test_ctrl_c_cancels_the_query(node, env):
    p = subprocess.Popen([cli_bin(), "--uri", node.uri, "sql", "SELECT * FROM range(10000000000) t(x)", "-f", "csv"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout.readline() == b"x\n"  # the query is running and streaming
    actions = do_action_count(node)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=RUN_DEADLINE_S)
    assert p.returncode == 130, err
    # Printed only when the node answered CancelFlightInfo with CANCELLED.
    assert b"query cancelled" in err, err
    assert do_action_count(node) == actions + 1


# ---------------------------------------------------------------------------------------------
# catalog and admin commands, connection settings


def test_catalog_and_admin_commands(node, env, loaded):
    tables = list(csv.DictReader(io.StringIO(ok(skein(env, node, "tables", "-f", "csv")))))
    assert {"schema": "main", "name": "src", "type": "TABLE"} in tables
    described = list(csv.DictReader(io.StringIO(ok(skein(env, node, "describe", "src", "-f", "csv")))))
    assert [d["column"] for d in described] == loaded.column_names
    version = ok(skein(env, None, "--version")).split()[-1]
    nodes = json.loads(ok(skein(env, node, "nodes", "-f", "json")))
    assert nodes == [{"node_id": "node1", "address": node.flight_addr, "version": version, "state": "serving"}]
    actions = {a["name"] for a in json.loads(ok(skein(env, node, "actions", "-f", "json")))}
    assert {"skein.flush", "skein.nodes", "CancelFlightInfo"} <= actions
    raw = ok(skein(env, node, "action", "skein.nodes"))
    assert [json.loads(l) for l in raw.splitlines()] == nodes
    assert ok(skein(env, node, "flush", "src")).strip() == "flushed src"
    assert ok(skein(env, node, "flush")).strip() == "flushed every table"
    parquet_files = list((node.data_dir / "objects").rglob("*.parquet"))
    assert parquet_files, "the flush wrote the table's rows to Parquet"
    with node.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM src").column("n")[0].as_py() == loaded.num_rows


def test_connection_settings_precedence(node, env, tmp_path):
    host, port = node.flight_addr.rsplit(":", 1)
    dead = str(free_port())
    config = tmp_path / "xdg-config" / "skein" / "config.toml"
    config.parent.mkdir(parents=True)
    # The default config file alone.
    config.write_text(f'host = "{host}"\nport = {port}\n')
    assert ok(skein(env, None, "sql", "SELECT 42 AS a", "-f", "csv")) == "a\n42\n"
    # Environment beats the file; flags beat the environment.
    config.write_text(f'host = "{host}"\nport = {dead}\n')
    failed(skein(env, None, "sql", "SELECT 1"))
    assert ok(skein(env, None, "sql", "SELECT 1 AS a", "-f", "csv", extra_env={"SKEIN_PORT": port})) == "a\n1\n"
    assert ok(skein(env, None, "--port", port, "sql", "SELECT 1 AS a", "-f", "csv",
                    extra_env={"SKEIN_PORT": dead})) == "a\n1\n"
    assert ok(skein(env, None, "sql", "SELECT 1 AS a", "-f", "csv",
                    extra_env={"SKEIN_URI": node.uri, "SKEIN_PORT": dead})) == "a\n1\n"
    # --config names another file; a malformed one is an error.
    other = tmp_path / "other.toml"
    other.write_text(f'uri = "{node.uri}"\nuser = "alice"\npassword = "secret"\n')
    assert ok(skein(env, None, "--config", str(other), "sql", "SELECT 2 AS a", "-f", "csv")) == "a\n2\n"
    other.write_text("prot = 1\n")
    err = failed(skein(env, None, "--config", str(other), "sql", "SELECT 1"))
    assert "other.toml" in err
    # Credentials are sent when given (the node has no auth yet and accepts them).
    assert ok(skein(env, node, "--token", "t0k", "sql", "SELECT 3 AS a", "-f", "csv")) == "a\n3\n"


# ---------------------------------------------------------------------------------------------
# the shell


SCRIPT = """\
-- a comment; with a semicolon
CREATE TABLE sh (id BIGINT, s VARCHAR);
INSERT INTO sh VALUES (1, 'a;b'),
                      (2, 'it''s');
\\d
\\d sh
SELECT id,
       s
FROM sh
ORDER BY id;
SELECT no_such_column FROM sh;
\\timing on
SELECT count(*) AS n FROM sh
"""


def test_shell_reads_statements_from_stdin(node, env):
    res = skein(env, node, "-f", "csv", stdin=SCRIPT)
    # One statement failed: the rest still ran, and the exit code says so.
    assert res.returncode == 1, res.stderr
    assert "no_such_column" in res.stderr and res.stderr.count("error:") == 1
    assert re.search(r"^Time: [0-9.]+ ms$", res.stderr, re.M)
    blocks = res.stdout.split("\n")
    out = res.stdout
    assert "schema,name,type\nmain,sh,TABLE\n" in out
    assert "column,type,nullable\nid,Int64,true\ns,Utf8,true\n" in out
    assert 'id,s\n1,a;b\n2,it\'s\n' in out
    assert out.endswith("n\n2\n"), blocks
    ok(skein(env, node, "-f", "csv", stdin="SELECT 1;\n\\q\nSELECT no_such_thing;\n"))


class Pty:
    """`skein` on a pseudo-terminal, as a person would run it."""

    def __init__(self, args, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(args[0], args, env)
        self.buffer = ""

    def expect(self, pattern, deadline_s=60) -> str:
        """Reads until `pattern` appears; returns the text up to and including it."""
        deadline = time.monotonic() + deadline_s
        regex = re.compile(pattern)
        while True:
            m = regex.search(self.buffer)
            if m:
                seen, self.buffer = self.buffer[: m.end()], self.buffer[m.end():]
                return seen
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in {self.buffer[-2000:]!r}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                assert data, f"the shell ended; no {pattern!r} in {self.buffer[-2000:]!r}"
                self.buffer += data.decode(errors="replace")

    def send(self, text: str):
        os.write(self.fd, text.encode())

    def wait(self, deadline_s=60) -> int:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            try:
                os.read(self.fd, 65536)  # drain
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.02)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the shell did not exit")


def test_interactive_shell_on_a_terminal(node, env):
    shell = Pty([cli_bin(), "--uri", node.uri], dict(env, TERM="dumb"))
    try:
        shell.expect(re.escape(PROMPT))
        shell.send("SELECT 40 +\r")
        shell.expect(re.escape("...> "))
        shell.send("2 AS answer;\r")
        seen = shell.expect(r"\(1 row\)")
        assert re.search(r"│\s+42\s+│", seen), seen
        shell.expect(re.escape(PROMPT))
        shell.send("\\timing\r")
        shell.expect("Timing is on.")
        shell.send("SELECT 1;\r")
        shell.expect(r"Time: [0-9.]+ ms")
        # Ctrl-C cancels a running query and returns to the prompt.
        shell.send("SELECT * FROM range(10000000000) t(x);\r")
        shell.expect(r"│\s+999\s+│")  # the first chunk is on screen: the query is streaming
        shell.send("\x03")
        shell.expect("query cancelled")
        shell.expect(re.escape(PROMPT))
        shell.send("SELECT 'still here' AS s;\r")
        shell.expect("still here")
        shell.expect(re.escape(PROMPT))
        shell.send("\\q\r")
        assert shell.wait() == 0
    finally:
        try:
            os.kill(shell.pid, signal.SIGKILL)
            os.waitpid(shell.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(shell.fd)
    history = Path(env["SKEIN_HISTORY"]).read_text()
    assert "SELECT 40 +" in history
