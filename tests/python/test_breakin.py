"""Break-in corpus: what an attacker tries against a node, with authentication on (a reader, and
a reader limited to one table) and off. Every attempt must be refused with the right gRPC code
and a message naming what was refused; afterwards the rows acknowledged are all there (after a
flush and a restart too), no table, view or file was added, and the node still serves."""

import re

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import _len_field, _varint, flight_sql_any, query, statement_query

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

DENIED, INVALID, UNIMPLEMENTED, NOT_FOUND, UNAUTHENTICATED = (
    "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND", "UNAUTHENTICATED")


def code_of(e: Exception) -> str:
    """The gRPC code pyarrow turned into this exception."""
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

    def adbc(self):
        kwargs = {"username": "root", "password": "r00t"} if self.auth else None
        return flightsql.connect(self.node.uri, db_kwargs=kwargs, autocommit=True)

    def ingest(self, table: str, start: int, n: int, mode="append"):
        rows = pa.table({"a": pa.array(range(start, start + n), pa.int64()),
                         "s": [f"{table}-{i}" for i in range(start, start + n)]})
        with self.adbc() as conn, conn.cursor() as cur:
            cur.adbc_ingest(table, rows, mode=mode)
        self.acknowledged[table] = self.acknowledged.get(table, 0) + n

    def flush(self):
        list(self.admin.client.do_action(flight.Action("skein.flush", b""), self.admin.options))

    def counts(self) -> dict:
        return {t: self.admin.sql(f"SELECT count(*) AS n FROM {t}").column(0)[0].as_py()
                for t in self.acknowledged}

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
        node = make_node("--auth-users", str(users), "--auth-secret", KEY)
    else:
        node = make_node()
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
    except (flight.FlightError, pa.ArrowException, OSError) as e:
        code, message = code_of(e), str(e)
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
        out.append(("reader writes through a forged ticket",
                    lambda: t.reader.do_get(statement_ticket("INSERT INTO pub VALUES (1, 'x')")),
                    {DENIED}, "ticket"))
    return out


def test_every_break_in_attempt_is_refused_and_changes_nothing(target):
    t = target
    tables_before, files_before = t.tables(), t.files()
    attempts = corpus(t)
    assert len(attempts) >= (100 if t.auth else 90), len(attempts)
    failures = {}
    for name, call, codes, pattern in attempts:
        problem = attempt(call, codes, pattern)
        if problem:
            failures[name] = problem
    assert not failures, "\n".join(f"{k}\n    {v}" for k, v in failures.items())

    # Nothing was lost, added or changed; the node serves, also after a flush and a restart.
    assert t.counts() == t.acknowledged
    assert t.tables() == tables_before
    assert t.files() == files_before
    if t.limited is not None:
        assert t.limited.sql("SELECT count(*) FROM pub").column(0)[0].as_py() == 320
    t.flush()
    t.node.stop()
    t.node.start()
    t.admin = Caller(t.node, "root", "r00t") if t.auth else Caller(t.node)
    assert t.counts() == t.acknowledged
    assert t.tables() == tables_before
    assert not [f for f in t.files() if not f.endswith(".parquet")]


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
