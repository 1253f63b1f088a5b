"""Test harness: real skein-server processes on free loopback ports, in temporary directories.

A `Node` starts the binary, reads the addresses it logs, waits for `/health` with a deadline,
and stops it with SIGTERM (killing it if it does not exit in time).

Real Redis and SeaweedFS S3 come from `components.py`: the session-wide `seaweed` store, a fresh
`bucket` in it per test, and a fresh `redis_server` per test.
"""

import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import duckdb
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from components import Redis, SeaweedS3

ROOT = Path(__file__).resolve().parents[2]
STARTUP_DEADLINE_S = 60
STOP_DEADLINE_S = 60


def built_binary(variable: str, name: str) -> str:
    """The binary named by `variable`, or `name` in the release build of the target directory."""
    path = os.environ.get(variable)
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/skein/target"))
        path = str(Path(target) / "release" / name)
    assert Path(path).exists(), f"{name} binary not found at {path}; run scripts/test.sh"
    return path


def server_bin() -> str:
    return built_binary("SKEIN_SERVER_BIN", "skein-server")


def cli_bin() -> str:
    return built_binary("SKEIN_CLI_BIN", "skein")


class Node:
    """One skein-server process."""

    def __init__(self, data_dir: Path, *extra: str, listen: str = "127.0.0.1:0",
                 http_listen: str = "127.0.0.1:0"):
        self.data_dir = Path(data_dir)
        self.extra = list(extra)
        self.listen = listen  # fixed ports for nodes that advertise their address to peers
        self.http_listen = http_listen
        self.proc = None
        self.lines: list[str] = []
        self.flight_addr = None
        self.http_addr = None
        self.env = {}  # extra environment variables of the process

    def start(self) -> "Node":
        args = [
            server_bin(),
            "--listen", self.listen,
            "--http-listen", self.http_listen,
            "--data-dir", str(self.data_dir),
            "--log-format", "json",
            "--query-threads", "2",
            *self.extra,
        ]
        self.lines = []
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                     env={**os.environ, **self.env})
        ready = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.lines.append(line)
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                fields = event.get("fields", {})
                if fields.get("message") == "serving":
                    self.flight_addr = fields["flight_addr"]
                    self.http_addr = fields["http_addr"]
                    ready.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("skein-server did not start:\n" + "".join(self.lines[-30:]))
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.http_addr}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("skein-server never became healthy")

    @property
    def uri(self) -> str:
        return f"grpc://{self.flight_addr}"

    def connect(self, headers: dict = None):
        """An ADBC connection; `headers` are sent as gRPC metadata with every call."""
        kwargs = {f"adbc.flight.sql.rpc.call_header.{k}": v for k, v in (headers or {}).items()}
        return flightsql.connect(self.uri, db_kwargs=kwargs or None, autocommit=True)

    def flight_client(self) -> flight.FlightClient:
        return flight.FlightClient(self.uri)

    def http_get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.http_addr}{path}", timeout=10) as r:
            return r.read().decode()

    def http_status(self, path: str) -> tuple:
        """(status code, body) of a GET, errors included."""
        try:
            with urllib.request.urlopen(f"http://{self.http_addr}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def flush(self, table: str = ""):
        client = self.flight_client()
        results = list(client.do_action(flight.Action("skein.flush", table.encode())))
        client.close()
        return results

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (a cluster of real processes)")


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "data").start()
    yield n
    n.stop()


@pytest.fixture
def make_node(tmp_path):
    """Starts nodes with extra flags; all are stopped at the end."""
    started = []

    def make(*extra, data_dir=None):
        n = Node(data_dir or tmp_path / f"data{len(started)}", *extra).start()
        started.append(n)
        return n

    yield make
    for n in started:
        n.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS S3 store (`weed mini`) for the whole session; tests share it, one bucket
    each. A test may `stop()` and `start()` it (same ports and data) but must leave it running."""
    store = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield store
    store.stop()


_bucket_seq = itertools.count()


@pytest.fixture
def bucket(seaweed):
    """A fresh, empty bucket in `seaweed` (its name); deleted with its objects afterwards."""
    if not seaweed.running:  # an earlier test took the store down and failed before restarting it
        seaweed.stop()
        seaweed.start()
    name = f"t{next(_bucket_seq):04d}-{uuid.uuid4().hex[:8]}"
    seaweed.create_bucket(name)
    yield name
    if not seaweed.running:
        seaweed.stop()
        seaweed.start()
    seaweed.delete_bucket(name)


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server for this test (no persistence); stopped afterwards."""
    r = Redis(tmp_path / "redis").start()
    yield r
    r.stop()


def query(conn, sql, parameters=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()


def oracle(tables: dict, sql: str) -> pa.Table:
    """Runs `sql` in an in-process DuckDB over the given Arrow tables."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for name, table in tables.items():
        con.register(name, table)
    return con.sql(sql).to_arrow_table()


def rows(table: pa.Table) -> list:
    return [tuple(r.values()) for r in table.to_pylist()]


def assert_same_rows(got: pa.Table, want: pa.Table, ordered=True):
    g, w = rows(got), rows(want)
    if not ordered:
        g, w = sorted(g, key=repr), sorted(w, key=repr)
    assert g == w


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def flight_sql_any(message: str, payload: bytes) -> bytes:
    """A Flight SQL command wrapped in protobuf `Any`, as Flight SQL clients send it."""
    type_url = f"type.googleapis.com/arrow.flight.protocol.sql.{message}".encode()
    return _len_field(1, type_url) + _len_field(2, payload)


def statement_query(sql: str) -> flight.FlightDescriptor:
    """Descriptor of a `CommandStatementQuery`, for pyarrow's plain Flight client."""
    return flight.FlightDescriptor.for_command(flight_sql_any("CommandStatementQuery", _len_field(1, sql.encode())))


CANCELLED = 1  # CancelStatus in Flight's protocol


def cancel_flight_info(client: flight.FlightClient, info: flight.FlightInfo) -> int:
    """The `CancelFlightInfo` action (pyarrow's client has no method for it); returns the status."""
    request = _len_field(1, info.serialize())
    results = list(client.do_action(flight.Action("CancelFlightInfo", request)))
    body = results[0].body.to_pybytes()
    # CancelFlightInfoResult { CancelStatus status = 1; }: an empty message means 0 (unspecified).
    return body[1] if len(body) >= 2 and body[0] == 0x08 else 0


def action(node, kind: str, body: bytes = b"") -> list:
    """Runs the Flight action `kind` on `node`; returns its results decoded from JSON."""
    client = node.flight_client()
    try:
        return [json.loads(r.body.to_pybytes()) for r in client.do_action(flight.Action(kind, body))]
    finally:
        client.close()


def metric(node, name: str) -> float:
    """The value of metric `skein_<name>` (its first series) on `node`."""
    for line in node.http_get("/metrics").splitlines():
        if line.startswith(f"skein_{name} ") or line.startswith(f"skein_{name}{{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not found")
