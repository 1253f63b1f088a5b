"""Break-in corpus: what an attacker tries against a node, with authentication on (a reader, and
a reader limited to one table) and off. Every attempt must be refused with the right gRPC code
and a message naming what was refused; afterwards the rows acknowledged are all there (after a
flush and a restart too), no table, view or file was added, and the node still serves."""

import base64
import json
import re
import struct
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flightsql
import grpc
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import _len_field, _varint, flight_sql_any, query, server_bin, statement_query

KEY = "breakin-cluster-secret-0123456789"
USERS = """
[[users]]
name = "root"
password = "r00t"
role = "admin"

[[users]]
name = "rita"
password = "r-pass"
role = "reader"

[[users]]
name = "lena"
password = "l-pass"
role = "reader"
tables = ["pub"]
"""

DENIED, INVALID, UNIMPLEMENTED, NOT_FOUND, UNAUTHENTICATED, EXHAUSTED = (
    "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND", "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED")
# The node's --max-message-bytes in these tests: a batch may not decompress to more.
MAX_MESSAGE = 4 * 1024 * 1024


def code_of(e: Exception) -> str:
    """The gRPC code pyarrow (or grpcio) turned into this exception."""
    if isinstance(e, grpc.RpcError):
        return e.code().name
    if isinstance(e, flight.FlightUnauthorizedError):
        return DENIED
    if isinstance(e, flight.FlightUnauthenticatedError):
        return UNAUTHENTICATED
    if isinstance(e, pa.ArrowNotImplementedError):
        return UNIMPLEMENTED
    if isinstance(e, pa.ArrowKeyError):
        return NOT_FOUND
    if isinstance(e, pa.ArrowInvalid):
        return INVALID
    return type(e).__name__


class Caller:
    """A pyarrow Flight client with its credentials."""

    def __init__(self, node, user=None, password=None):
        self.client = flight.FlightClient(node.uri)
        headers = []
        if user:
            headers = [self.client.authenticate_basic_token(user.encode(), password.encode())]
        self.options = flight.FlightCallOptions(headers=headers)

    def sql(self, text: str) -> pa.Table:
        info = self.client.get_flight_info(statement_query(text), self.options)
        return pa.concat_tables(
            [self.client.do_get(e.ticket, self.options).read_all() for e in info.endpoints])

    def ticket(self, text: str) -> bytes:
        info = self.client.get_flight_info(statement_query(text), self.options)
        return info.endpoints[0].ticket.ticket

    def do_get(self, ticket: bytes) -> pa.Table:
        return self.client.do_get(flight.Ticket(ticket), self.options).read_all()

    def prepare(self, sql: str) -> bytes:
        """A prepared statement's handle (CreatePreparedStatement)."""
        body = flight_sql_any("ActionCreatePreparedStatementRequest", _len_field(1, sql.encode()))
        results = list(self.client.do_action(flight.Action("CreatePreparedStatement", body),
                                             self.options))
        any_msg = _decode_fields(results[0].body.to_pybytes())
        return _decode_fields(any_msg[2])[1]

    def close_prepared(self, handle: bytes):
        body = flight_sql_any("ActionClosePreparedStatementRequest", _len_field(1, handle))
        list(self.client.do_action(flight.Action("ClosePreparedStatement", body), self.options))


class RawFlight:
    """Flight's DoPut over plain gRPC: every byte of every message as the test builds it, which
    no Arrow library would send."""

    def __init__(self, node, user=None, password=None):
        self.address = node.flight_addr
        self.metadata = []
        if user:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.metadata = [("authorization", f"Basic {basic}")]

    def do_put(self, messages: list):
        with grpc.insecure_channel(self.address) as channel:
            call = channel.stream_stream("/arrow.flight.protocol.FlightService/DoPut")
            return list(call(iter(messages), metadata=self.metadata, timeout=60))


def flight_data(header=b"", body=b"", descriptor=None) -> bytes:
    """A FlightData message in protobuf (data_body is field 1000)."""
    out = _len_field(1, descriptor) if descriptor is not None else b""
    if header:
        out += _len_field(2, header)
    if body:
        out += _varint((1000 << 3) | 2) + _varint(len(body)) + body
    return out


def path_descriptor(table: str) -> bytes:
    return _varint(1 << 3) + _varint(1) + _len_field(3, table.encode())


def command_descriptor(command: bytes) -> bytes:
    return _varint(1 << 3) + _varint(2) + _len_field(2, command)


def ipc_messages(table: pa.Table, compression=None) -> list:
    """(flatbuffer header, body) of each IPC message pyarrow writes for `table`."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    reader = pa.ipc.MessageReader.open_stream(sink.getvalue())
    out = []
    while True:
        try:
            m = reader.read_next_message()
        except StopIteration:
            return out
        out.append((m.metadata.to_pybytes(), m.body.to_pybytes() if m.body is not None else b""))


def rows_of(n: int, start=0) -> pa.Table:
    return pa.table({"a": pa.array(range(start, start + n), pa.int64()),
                     "s": [f"lie-{i}" for i in range(start, start + n)]})


def lying_stream(descriptor: bytes, table: pa.Table, lie, compression=None) -> list:
    """The DoPut messages for `table`, with `lie(header, body) -> (header, body)` applied to its
    record batch."""
    (schema, _), (header, body) = ipc_messages(table, compression)[:2]
    header, body = lie(header, body)
    return [flight_data(schema, descriptor=descriptor), flight_data(header, body)]


def claim_uncompressed(n: int):
    """A compressed batch whose first buffer (column a's values) claims `n` bytes unpacked."""
    def lie(header, body):
        assert struct.unpack("<q", body[:8])[0] in (8 * 1000, 8 * 64), body[:8]
        return header, struct.pack("<q", n) + body[8:]
    return lie


def replace_in_header(old: bytes, new: bytes):
    def lie(header, body):
        assert old in header, (old, header)
        return header.replace(old, new), body
    return lie


def cut_body(header, body):
    return header, body[: len(body) // 2]


def garbage_header(header, body):
    return bytes(reversed(header)), body


IPC_LIES = [
    # (name, lie, compression, message pattern)
    ("LZ4 buffer claiming 2^44 bytes", claim_uncompressed(1 << 44), "lz4", "decompress to more"),
    ("ZSTD buffer claiming 2^40 bytes", claim_uncompressed(1 << 40), "zstd", "decompress to more"),
    ("LZ4 buffer claiming just past the limit", claim_uncompressed(MAX_MESSAGE + 1), "lz4",
     "decompress to more"),
    ("LZ4 buffer claiming a negative size", claim_uncompressed(-7), "lz4", "claims -7"),
    ("buffer reaching past the body", replace_in_header(struct.pack("<qq", 0, 8000),
                                                        struct.pack("<qq", 0, 8000 + (1 << 40))),
     None, "reaches outside"),
    ("buffer at a negative offset", replace_in_header(struct.pack("<qq", 0, 8000),
                                                      struct.pack("<qq", -64, 8000)),
     None, "reaches outside"),
    ("batch claiming 2^50 rows", replace_in_header(struct.pack("<q", 1000),
                                                   struct.pack("<q", 1 << 50)),
     None, "claims|values"),
    ("body shorter than declared", cut_body, None, "declares a body"),
    ("header that is not a flatbuffer", garbage_header, None, "flatbuffer|IPC"),
]


def statement_ticket(sql: str, query_id="forged-1") -> bytes:
    """A `TicketStatementQuery` holding skein's statement ticket, built by hand."""
    handle = _len_field(1, query_id.encode()) + _len_field(2, sql.encode())
    return flight_sql_any("TicketStatementQuery", _len_field(1, handle))


def fragment_ticket(sql: str) -> bytes:
    """A fragment ticket (skein.Fragment in protobuf Any), built by hand and unsigned."""
    fragment = (_len_field(1, b"forged-fragment") + _len_field(2, sql.encode())
                + _len_field(5, b"node1") + _len_field(6, b"node1"))
    return _len_field(1, b"type.googleapis.com/skein.Fragment") + _len_field(2, fragment)


def prepared_ticket(handle: bytes) -> bytes:
    return flight_sql_any("CommandPreparedStatementQuery", _len_field(1, handle))


def alter_ticket(ticket: bytes, old: str, new: str) -> bytes:
    """The ticket with the SQL inside replaced (lengths re-encoded): what a client may send."""
    assert ticket.count(old.encode()) == 1, ticket
    parts = _decode_fields(_decode_fields(_decode_fields(ticket)[2])[1])
    parts[2] = parts[2].replace(old.encode(), new.encode())
    handle = b"".join(_len_field(k, v) if isinstance(v, bytes) else _varint(k << 3) + _varint(v)
                      for k, v in parts.items())
    return flight_sql_any("TicketStatementQuery", _len_field(1, handle))


def _decode_fields(data: bytes) -> dict:
    """The length-delimited and varint fields of a protobuf message (last one wins)."""
    out, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 2:
            n, i = _read_varint(data, i)
            out[number], i = data[i:i + n], i + n
        elif wire == 0:
            out[number], i = _read_varint(data, i)
        else:
            raise AssertionError(f"wire type {wire}")
    return out


def _read_varint(data: bytes, i: int):
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


class Target:
    """A node with tables `pub` and `secret`, rows flushed and buffered, and its callers."""

    def __init__(self, node, auth: bool):
        self.node, self.auth = node, auth
        self.admin = Caller(node, "root", "r00t") if auth else Caller(node)
        self.reader = Caller(node, "rita", "r-pass") if auth else Caller(node)
        self.limited = Caller(node, "lena", "l-pass") if auth else None
        self.acknowledged = {}
        self.sent = {}

    def adbc(self):
        kwargs = {"username": "root", "password": "r00t"} if self.auth else None
        return flightsql.connect(self.node.uri, db_kwargs=kwargs, autocommit=True)

    def ingest(self, table: str, start: int, n: int, mode="append"):
        rows = pa.table({"a": pa.array(range(start, start + n), pa.int64()),
                         "s": [f"{table}-{i}" for i in range(start, start + n)]})
        with self.adbc() as conn, conn.cursor() as cur:
            cur.adbc_ingest(table, rows, mode=mode)
        self.acknowledged[table] = self.acknowledged.get(table, 0) + n
        self.sent.setdefault(table, []).extend(rows.to_pylist())

    def flush(self):
        list(self.admin.client.do_action(flight.Action("skein.flush", b""), self.admin.options))

    def counts(self) -> dict:
        return {t: self.admin.sql(f"SELECT count(*) AS n FROM {t}").column(0)[0].as_py()
                for t in self.acknowledged}

    def unchanged(self):
        """Every table holds exactly the rows acknowledged, values and columns alike: an
        UPDATE, DELETE or ADD COLUMN that ran and was reported refused shows here."""
        for table, sent in self.sent.items():
            got = self.admin.sql(f"SELECT * FROM {table} ORDER BY a")
            assert got.column_names == ["a", "s"], (table, got.column_names)
            assert got.to_pylist() == sorted(sent, key=lambda r: r["a"]), table

    def tables(self) -> list:
        got = self.admin.sql("SELECT table_name, table_type FROM information_schema.tables "
                             "WHERE table_schema = 'main' ORDER BY 1")
        return sorted(zip(got.column(0).to_pylist(), got.column(1).to_pylist()))

    def files(self) -> list:
        return sorted(str(p.relative_to(self.node.data_dir))
                      for p in self.node.data_dir.rglob("*")
                      if p.is_file() and "objects" in p.parts)


@pytest.fixture(params=["auth-on", "auth-off"])
def target(request, make_node, tmp_path):
    if request.param == "auth-on":
        users = tmp_path / "users.toml"
        users.write_text(USERS)
        node = make_node("--auth-users", str(users), "--auth-secret", KEY,
                         "--max-message-bytes", str(MAX_MESSAGE))
    else:
        node = make_node("--max-message-bytes", str(MAX_MESSAGE))
    t = Target(node, request.param == "auth-on")
    t.ingest("pub", 0, 300, mode="create")
    t.ingest("secret", 0, 200, mode="create")
    t.flush()
    t.ingest("pub", 300, 20)  # buffered, acknowledged, not flushed
    t.ingest("secret", 200, 10)
    return t


SMUGGLED = [
    # DuckDB's lexer and sqlparser's differ: block comments nest, E'' strings escape, a
    # backslash in a standard string is just a character.
    "SELECT E'\\'' ; CREATE TABLE smuggled_a (a INT); SELECT ''",
    "SELECT '\\'; CREATE TABLE smuggled_b (a INT); --'",
    "SELECT 1 /* a */ ; /* b */ CREATE TABLE smuggled_c (a INT)",
    "SELECT 1 /* /* */ */ ; CREATE TABLE smuggled_d (a INT)",
    "SELECT 1; CREATE TABLE smuggled_e (a INT)",
    "SELECT 1 --\n; CREATE TABLE smuggled_f (a INT)",
    "SELECT $$ ; $$; CREATE TABLE smuggled_g (a INT)",
    "SELECT 'a' 'b'; DELETE FROM pub",
    "SELECT e'\\\\'; DROP TABLE pub; --'",
    "WITH x AS (SELECT 1) SELECT * FROM x; INSERT INTO pub VALUES (9, 'x')",
    "SELECT 1 /* */; COPY pub TO 'objects/stolen.csv'",
    "SELECT $tag$ $$ ; $tag$; CREATE OR REPLACE VIEW pub AS SELECT 1 AS a",
]

EXPLAIN_WRITES = [
    "EXPLAIN ANALYZE CREATE TABLE explained_a AS SELECT 1 AS a",
    "EXPLAIN ANALYZE INSERT INTO pub VALUES (9, 'x')",
    "EXPLAIN ANALYZE DELETE FROM pub",
    "EXPLAIN ANALYZE UPDATE pub SET a = 0",
    "EXPLAIN CREATE TABLE explained_b (a INT)",
    "EXPLAIN (ANALYZE) DELETE FROM pub",
    "EXPLAIN ANALYZE DROP TABLE pub",
    "explain   analyze\n create table explained_c(a int)",
]

# Functions and views that reach files, settings, logs, SQL strings or engine state.
FORBIDDEN_FROM = [
    "read_duckdb('x.duckdb')", "read_single_csv_file('x.csv')", "read_single_json_file('x')",
    "read_single_parquet_file('x')", "parquet_full_metadata('x')", "parquet_page_index('x')",
    "parquet_file_metadata('x')", "parquet_kv_metadata('x')", "parquet_bloom_probe('x', 'a', 1)",
    "json_execute_serialized_sql(json_serialize_sql('SELECT 1'))", "duckdb_logs()",
    "duckdb_settings()", "duckdb_secrets()", "duckdb_memory()", "duckdb_temporary_files()",
    "duckdb_variables()", "duckdb_prepared_statements()", "duckdb_live_query_metrics()",
    "duckdb_extensions()", "duckdb_table_sample('secret')", "pragma_storage_info('pub')",
    "pragma_database_size()", "pragma_metadata_info()", "enable_logging()", "disable_logging()",
    "checkpoint()", "force_checkpoint()", "truncate_duckdb_logs()", "which_secret('s3://x', 's3')",
    "histogram_values(secret, a)", "histogram(secret, a)", "query_table('secret')",
    "query('SELECT 1')", "glob('*')", "duckdb_logs_parsed('QueryLog')", "enable_profiling()",
    "duckdb_external_file_cache()", "duckdb_connection_count()", "read_text('x')",
    "read_csv('/etc/passwd')", "duckdb_log_contexts()", "sniff_csv('x')",
]
FORBIDDEN_VIEWS = ["pg_settings", "pg_catalog.pg_settings", "duckdb_logs", "system.main.duckdb_logs",
                   "pg_prepared_statements"]
FORBIDDEN_EXPRESSIONS = [
    "current_setting('memory_limit')", "getvariable('x')",
    "json_serialize_plan('SELECT * FROM secret')", "nextval('s')", "write_log('x')",
    "sleep_ms(100000)", "pg_sleep(100)", "\"CURRENT_SETTING\"('threads')",
    "system.main.current_setting('threads')", "main.current_setting('threads')",
]

LIMIT_ESCAPES = [
    "SELECT * FROM secret",
    "FROM secret",
    'SELECT * FROM "SECRET"',
    "SELECT * FROM main.secret",
    "SELECT * FROM memory.main.secret",
    "SELECT * FROM temp.main.secret",
    "SELECT * FROM skein_buf.secret",
    "SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) x, secret",
    "SELECT * FROM pub WHERE a IN (WITH secret AS (SELECT 1 AS a) SELECT a FROM secret) "
    "OR a IN (SELECT a FROM secret)",
    "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
    "WITH a AS (SELECT * FROM secret), secret AS (SELECT 1) SELECT * FROM a",
    "WITH RECURSIVE secret AS (SELECT * FROM secret UNION ALL SELECT * FROM secret) SELECT 1",
    "SELECT * FROM pub WHERE a IN (SELECT a FROM secret)",
    "SELECT a, s FROM pub UNION ALL SELECT a, s FROM secret",
    "SELECT * FROM pub, LATERAL (SELECT * FROM secret) x",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT * FROM secret'))",
    "SELECT * FROM query('SELECT * FROM secret')",
    "SELECT * FROM query_table('secret')",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM duckdb_columns",
    "SELECT * FROM pg_catalog.pg_class",
    "SELECT * FROM sqlite_master",
    "SHOW TABLES",
    "DESCRIBE secret",
    "SUMMARIZE secret",
    "SELECT * FROM skein_tables",
    "SELECT * FROM skein_query_log",
    "SELECT * FROM pragma_table_info('secret')",
    "SELECT has_table_privilege('secret', 'select')",
    "EXPLAIN SELECT * FROM secret",
    "EXPLAIN ANALYZE SELECT * FROM secret",
]

FORGED_STATEMENTS = [
    ("CREATE TABLE forged_a (a INT)", DENIED),
    ("DELETE FROM pub", DENIED),
    ("UPDATE pub SET a = 0", DENIED),
    ("INSERT INTO pub VALUES (9, 'x')", DENIED),
    ("DROP TABLE pub", DENIED),
    ("COPY pub TO 'objects/stolen.csv'", UNIMPLEMENTED),
    ("CREATE OR REPLACE VIEW pub AS SELECT 1 AS a", UNIMPLEMENTED),
    ("SELECT 1; CREATE TABLE forged_b (a INT)", INVALID),
    ("SELECT 1 /* /* */ */ ; CREATE TABLE forged_c (a INT)", INVALID),
    ("EXPLAIN ANALYZE CREATE TABLE forged_d (a INT)", DENIED),
    ("SELECT * FROM read_text('/etc/passwd')", DENIED),
    ("ATTACH ':memory:' AS x", UNIMPLEMENTED),
    ("SET threads = 1", UNIMPLEMENTED),
    ("CHECKPOINT", UNIMPLEMENTED),
    ("ALTER TABLE pub ADD COLUMN forged INT", DENIED),
]


def attempt(call, codes, pattern):
    """Runs one attempt; returns a description of what went wrong, or None if it was refused
    as it should be."""
    try:
        call()
    except (flight.FlightError, pa.ArrowException, OSError, grpc.RpcError) as e:
        code = code_of(e)
        message = e.details() if isinstance(e, grpc.RpcError) else str(e)
        if code not in codes:
            return f"refused with {code}, wanted {codes}: {message[:300]}"
        if not re.search(pattern, message, re.IGNORECASE):
            return f"message does not name what was refused ({pattern}): {message[:300]}"
        if "pub-1" in message or "secret-1" in message:
            return f"the message leaks rows: {message[:300]}"
        return None
    return "it was not refused"


def corpus(t: Target) -> list:
    """(name, call, acceptable codes, message pattern) for every attempt against `t`."""
    r, out = t.reader, []
    for sql in SMUGGLED:
        out.append((sql, lambda sql=sql: r.sql(sql), {INVALID}, "one SQL statement"))
    for sql in EXPLAIN_WRITES:
        out.append((sql, lambda sql=sql: r.sql(sql), {DENIED}, "EXPLAIN"))
    for f in FORBIDDEN_FROM:
        sql = f"SELECT * FROM {f}"
        name = f.split("(")[0]
        out.append((sql, lambda sql=sql: r.sql(sql), {DENIED}, re.escape(name)))
    for v in FORBIDDEN_VIEWS:
        sql = f"SELECT * FROM {v}"
        out.append((sql, lambda sql=sql: r.sql(sql), {DENIED}, re.escape(v.split(".")[-1])))
    for e in FORBIDDEN_EXPRESSIONS:
        sql = f"SELECT a FROM pub WHERE a = 1 OR {e} IS NULL"
        name = e.split("(")[0].split(".")[-1].strip('"')
        out.append((sql, lambda sql=sql: r.sql(sql), {DENIED}, re.escape(name)))
    # Forged and altered tickets: whatever a ticket holds runs only as the caller's query.
    for sql, code in FORGED_STATEMENTS:
        out.append((f"forged ticket: {sql}", lambda sql=sql: r.do_get(statement_ticket(sql)),
                    {code}, "ticket|not allowed|not supported|one SQL statement|may not|EXPLAIN"))
    real = r.ticket("SELECT * FROM pub")
    for new in ["DELETE FROM pub", "CREATE TABLE altered_a AS SELECT 1 AS a",
                "SELECT * FROM read_blob('/etc/passwd')"]:
        altered = alter_ticket(real, "SELECT * FROM pub", new)
        out.append((f"altered ticket: {new}", lambda b=altered: r.do_get(b), {DENIED},
                    "ticket|not allowed"))
    for sql in ["DELETE FROM pub", "SELECT * FROM read_text('/etc/passwd')",
                "CREATE TABLE fragment_a (a INT)"]:
        out.append((f"forged fragment: {sql}", lambda sql=sql: r.do_get(fragment_ticket(sql)),
                    {DENIED}, "signed|fragment ticket|not allowed"))
    out.append(("unknown prepared handle", lambda: r.do_get(prepared_ticket(b"no-such-handle")),
                {NOT_FOUND}, "prepared statement"))
    # Oversized and lying Arrow IPC bodies, by bulk ingest (a writer) and by a reader binding
    # prepared-statement parameters: refused before decoding; the node does not abort.
    writer = RawFlight(t.node, "root", "r00t") if t.auth else RawFlight(t.node)
    binder = RawFlight(t.node, "rita", "r-pass") if t.auth else RawFlight(t.node)
    handle = r.prepare("SELECT count(*) FROM pub WHERE a > $1")
    bind = command_descriptor(flight_sql_any("CommandPreparedStatementQuery",
                                             _len_field(1, handle)))
    params = pa.table({"$1": pa.array(range(1000), pa.int64())})
    for name, lie, compression, pattern in IPC_LIES:
        for who, raw, descriptor, table in [("ingest", writer, path_descriptor("pub"), rows_of(1000)),
                                             ("bind", binder, bind, params)]:
            messages = lying_stream(descriptor, table, lie, compression)
            out.append((f"{who}: {name}", lambda raw=raw, m=messages: raw.do_put(m), {INVALID},
                        pattern))
    huge = rows_of(MAX_MESSAGE // 8)  # over the gRPC message bound once encoded
    out.append(("ingest: a message over --max-message-bytes",
                lambda: writer.do_put(lying_stream(path_descriptor("pub"), huge, lambda h, b: (h, b))),
                {EXHAUSTED, "OUT_OF_RANGE"}, "larger than|too large"))
    many = pa.table({"$1": pa.array(range(MAX_MESSAGE // 16), pa.int64())})
    out.append(("bind: parameters over --max-message-bytes in all",
                lambda: binder.do_put([flight_data(ipc_messages(many)[0][0], descriptor=bind)]
                                      + [flight_data(h, b) for h, b in ipc_messages(many)[1:]] * 3),
                {INVALID}, "bound parameters exceed"))
    if t.limited is not None:
        lena = t.limited
        for sql in LIMIT_ESCAPES:
            out.append((f"lena: {sql}", lambda sql=sql: lena.sql(sql), {DENIED},
                        "may not|not allowed"))
        for sql in ["SHOW ALL TABLES", "SHOW secret"]:  # statements skein does not run at all
            out.append((f"lena: {sql}", lambda sql=sql: lena.sql(sql), {UNIMPLEMENTED},
                        "not supported"))
        real = lena.ticket("SELECT * FROM pub")
        altered = alter_ticket(real, "SELECT * FROM pub", "SELECT * FROM secret")
        out.append(("lena: altered ticket to secret", lambda: lena.do_get(altered), {DENIED},
                    "may not"))
        out.append(("lena: fragment reading secret",
                    lambda: lena.do_get(fragment_ticket("SELECT * FROM secret")), {DENIED},
                    "signed"))
        # Another user's prepared statement is not theirs to run or close.
        ritas = r.prepare("SELECT count(*) FROM pub")
        out.append(("lena: rita's prepared statement",
                    lambda: lena.do_get(prepared_ticket(ritas)), {DENIED}, "another user"))
        out.append(("lena: closing rita's prepared statement",
                    lambda: lena.close_prepared(ritas), {DENIED}, "another user"))
        out.append(("reader writes through a forged ticket",
                    lambda: t.reader.do_get(statement_ticket("INSERT INTO pub VALUES (1, 'x')")),
                    {DENIED}, "ticket"))
    return out


def test_every_break_in_attempt_is_refused_and_changes_nothing(target):
    t = target
    tables_before, files_before = t.tables(), t.files()
    attempts = corpus(t)
    assert len(attempts) >= 100, len(attempts)
    failures = {}
    for name, call, codes, pattern in attempts:
        problem = attempt(call, codes, pattern)
        if problem:
            failures[name] = problem
    assert not failures, "\n".join(f"{k}\n    {v}" for k, v in failures.items())

    # Nothing was lost, added or changed; the node serves, also after a flush and a restart.
    assert t.counts() == t.acknowledged
    t.unchanged()
    assert t.tables() == tables_before
    assert t.files() == files_before
    if t.limited is not None:
        assert t.limited.sql("SELECT count(*) FROM pub").column(0)[0].as_py() == 320
    t.flush()
    t.node.stop()
    t.node.start()
    t.admin = Caller(t.node, "root", "r00t") if t.auth else Caller(t.node)
    assert t.counts() == t.acknowledged
    t.unchanged()
    assert t.tables() == tables_before
    files_after = t.files()
    assert set(files_before) <= set(files_after)
    assert not [f for f in files_after if not f.endswith(".parquet")]


def test_legitimate_statements_near_the_edges_still_run(target):
    """What the checks must not refuse: CTEs that shadow, recursion, EXPLAIN, catalog reads
    for unlimited users, escapes in strings."""
    r = target.reader
    checks = {
        "WITH secret AS (SELECT 41 AS a) SELECT a + 1 FROM secret": [(42,)],
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT sum(n) FROM r": [(6,)],
        "SELECT E'\\'' || '\\' AS s": [("'\\",)],
        "SELECT 1 /* /* nested */ still a comment */ + 1": [(2,)],
        "SELECT count(*) FROM pub WHERE s LIKE 'pub-%'": [(320,)],
    }
    for sql, want in checks.items():
        got = r.sql(sql)
        assert [tuple(row.values()) for row in got.to_pylist()] == want, sql
    plan = r.sql("EXPLAIN SELECT count(*) FROM pub")
    assert plan.num_rows >= 1 and "explain_value" in plan.column_names
    analyzed = r.sql("EXPLAIN ANALYZE SELECT count(*) FROM pub")
    assert analyzed.num_rows >= 1
    names = r.sql("SELECT view_name FROM duckdb_views() ORDER BY 1").column(0).to_pylist()
    assert {"pub", "secret"} <= set(names)
    if target.limited is not None:
        lena = target.limited
        got = lena.sql("WITH secret AS (SELECT a FROM pub) SELECT count(*) FROM secret")
        assert got.column(0)[0].as_py() == 320
        assert lena.sql("DESCRIBE pub").num_rows == 2
    with target.adbc() as conn:
        assert query(conn, "SELECT count(*) AS n FROM secret").column(0)[0].as_py() == 210


def token_claims(token: bytes) -> dict:
    body = token.decode().split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def bearer(token: bytes) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(headers=[(b"authorization", b"Bearer " + token)])


def handshake(address: str, authorization: str) -> bytes:
    """The token Flight's handshake answers to a caller presenting `authorization`."""
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_stream("/arrow.flight.protocol.FlightService/Handshake")
        responses = list(call(iter([b""]), metadata=[("authorization", authorization)],
                              timeout=30))
    return _decode_fields(responses[0]).get(2, b"")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def wait_until(condition, what: str, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def refused(call):
    """The exception `call` raised, or None."""
    try:
        call()
    except (flight.FlightError, pa.ArrowException, grpc.RpcError) as e:
        return e
    return None


def test_identity_follows_the_users_file(make_node, tmp_path):
    """A token cannot renew itself; removing a user, changing a role or a password ends what
    their tokens may do; hashed passwords work; failed logins are bounded."""
    hashed = subprocess.run([server_bin(), "hash-password"], input="h-pass\n", text=True,
                            capture_output=True, check=True).stdout.strip()
    assert hashed.startswith("$argon2id$"), hashed
    users = tmp_path / "users.toml"
    hana = f'\n[[users]]\nname = "hana"\npassword = "{hashed}"\nrole = "reader"\n'
    tom = '\n[[users]]\nname = "tom"\npassword = "t-pass"\nrole = "reader"\n'
    wendy = '\n[[users]]\nname = "wendy"\npassword = "w-pass"\nrole = "{role}"\n'
    users.write_text(USERS + hana + tom + wendy.format(role="writer"))
    node = make_node("--auth-users", str(users), "--auth-secret", KEY)
    address = node.flight_addr

    # A hashed password logs in; the hash itself is no password.
    assert Caller(node, "hana", "h-pass").sql("SELECT 42 AS x").column(0)[0].as_py() == 42
    assert code_of(refused(lambda: Caller(node, "hana", hashed))) == UNAUTHENTICATED

    # A handshake with a token answers a token that ends when it does.
    token = handshake(address, basic("tom", "t-pass"))
    renewed = handshake(address, "Bearer " + token.decode())
    assert token_claims(renewed)["e"] == token_claims(token)["e"]
    client = flight.FlightClient(node.uri)

    def run(token_bytes):
        info = client.get_flight_info(statement_query("SELECT 1 AS one"), bearer(token_bytes))
        return client.do_get(info.endpoints[0].ticket, bearer(token_bytes)).read_all()

    assert run(token).num_rows == 1 and run(renewed).num_rows == 1

    # Wendy, a writer, ingests with her token; rita's token works.
    wendy_token = handshake(address, basic("wendy", "w-pass"))
    wendy_raw = RawFlight(node)
    wendy_raw.metadata = [("authorization", "Bearer " + wendy_token.decode())]
    honest = lying_stream(path_descriptor("wtab"), rows_of(10), lambda h, b: (h, b))
    wendy_raw.do_put(honest)
    rita_token = handshake(address, basic("rita", "r-pass"))
    assert run(rita_token).num_rows == 1

    # Tom is removed, Wendy becomes a reader, Rita's password changes.
    users.write_text(USERS.replace('"r-pass"', '"r-new"') + hana
                     + wendy.format(role="reader"))
    wait_until(lambda: refused(lambda: run(token)) is not None, "tom's token is refused")
    for t in (token, renewed):
        e = refused(lambda t=t: run(t))
        assert code_of(e) == UNAUTHENTICATED and "no longer exists" in str(e), e
        e = refused(lambda t=t: handshake(address, "Bearer " + t.decode()))
        assert code_of(e) == UNAUTHENTICATED, e
    e = refused(lambda: wendy_raw.do_put(honest))
    assert code_of(e) == DENIED and "writer" in str(e).lower(), e
    e = refused(lambda: run(rita_token))
    assert code_of(e) == UNAUTHENTICATED and "password" in str(e), e
    assert run(handshake(address, basic("rita", "r-new"))).num_rows == 1
    admin = Caller(node, "root", "r00t")
    assert admin.sql("SELECT count(*) FROM wtab").column(0)[0].as_py() == 10

    # Failed logins: after ten a minute (the hash tried as a password above was one), this
    # user may not try again for a while, with the right password either.
    for _ in range(9):
        e = refused(lambda: handshake(address, basic("hana", "guess")))
        assert code_of(e) == UNAUTHENTICATED, e
    e = refused(lambda: handshake(address, basic("hana", "h-pass")))
    assert code_of(e) == EXHAUSTED and "too many failed logins" in str(e), e
    assert admin.sql("SELECT 1").num_rows == 1  # tokens already issued still work


@pytest.mark.parametrize("auth", [True, False], ids=["auth-on", "auth-off"])
def test_stalled_readers_do_not_starve_other_users(make_node, tmp_path, auth):
    """64 streams that read one batch and stop: one user holds at most half the query slots,
    another user's query runs meanwhile, and past --stall-timeout the stalled queries stop,
    give their slots back and end in an error (never as if complete)."""
    # Long enough that opening the 64 streams on a loaded machine takes less.
    flags = ["--max-queries", "64", "--stall-timeout", "30s"]
    if auth:
        users = tmp_path / "users.toml"
        users.write_text(USERS)
        flags += ["--auth-users", str(users), "--auth-secret", KEY]
    node = make_node(*flags)
    staller = Caller(node, "rita", "r-pass") if auth else Caller(node)
    other = Caller(node, "lena", "l-pass") if auth else Caller(node)  # its own connection
    big = "SELECT range AS a, range::VARCHAR AS s FROM range(100000000)"
    streams, refusals = [], []
    opening = time.monotonic()
    for _ in range(64):
        try:
            reader = staller.client.do_get(flight.Ticket(staller.ticket(big)), staller.options)
            reader.read_chunk()
            streams.append(reader)
        except (flight.FlightError, pa.ArrowException) as e:
            refusals.append(str(e))
    assert time.monotonic() - opening < 30, "opening the streams outlasted --stall-timeout"
    assert len(streams) == 32, (len(streams), refusals[:2])
    assert all("--max-queries-per-user" in r for r in refusals), refusals[:2]
    # Another user's query runs while the stalled streams hold their slots.
    assert other.sql("SELECT 42 AS x").column(0)[0].as_py() == 42
    # Past the stall timeout the stalled queries stop and give their slots back...
    watcher = Caller(node, "root", "r00t") if auth else Caller(node)
    stopped = ("SELECT count(*) FROM skein_query_log "
               "WHERE status LIKE '%--stall-timeout%'")
    wait_until(lambda: watcher.sql(stopped).column(0)[0].as_py() == 32,
               "the 32 stalled queries were stopped", timeout=90)
    assert staller.sql("SELECT 1 AS one").num_rows == 1
    # ...and what was left of each stream ends in an error, not as a complete result.
    for reader in streams:
        e = rest_of(reader)
        assert e is not None and "stall-timeout" in str(e), e


def rest_of(reader, most: int = 64):
    """How what is left of a stream ends: its error, or None if it ends cleanly. Reads at most
    `most` more batches: a query that was not stopped would go on for its 100 M rows."""
    for _ in range(most):
        try:
            reader.read_chunk()
        except StopIteration:
            return None
        except (flight.FlightError, pa.ArrowException) as e:
            return e
    raise AssertionError(f"the stream went on for more than {most} batches after the stop")
