"""Authentication and roles: Basic in the handshake for a signed bearer token; every RPC but the
handshake refuses a missing, wrong, expired or foreign token; readers cannot write."""

import time

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import query, statement_query

SECRET = "0123456789abcdef-test-secret"
USERS = """
[[users]]
name = "root"
password = "r00t"
role = "admin"

[[users]]
name = "wendy"
password = "w-pass"
role = "writer"

[[users]]
name = "rita"
password = "r-pass"
role = "reader"

[[users]]
name = "lena"
password = "l-pass"
role = "reader"
tables = ["t"]

[[users]]
name = "walt"
password = "w2-pass"
role = "writer"
tables = ["w"]
"""


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text(USERS)
    return path


@pytest.fixture
def secured(make_node, users_file):
    return make_node("--auth-users", str(users_file), "--auth-secret", SECRET)


def login(node, user, password):
    client = flight.FlightClient(node.uri)
    header = client.authenticate_basic_token(user.encode(), password.encode())
    return client, flight.FlightCallOptions(headers=[header])


def adbc(node, user, password):
    return flightsql.connect(node.uri, db_kwargs={"username": user, "password": password},
                             autocommit=True)


def every_rpc(client, options, ticket):
    """Calls every Flight RPC once; returns the error of each (None if it succeeded)."""
    descriptor = statement_query("SELECT 1")
    calls = {
        "GetFlightInfo": lambda: client.get_flight_info(descriptor, options),
        "GetSchema": lambda: client.get_schema(descriptor, options),
        "DoGet": lambda: client.do_get(ticket, options).read_all(),
        "DoAction": lambda: list(client.do_action(flight.Action("skein.nodes", b""), options)),
        "ListActions": lambda: list(client.list_actions(options)),
        "ListFlights": lambda: list(client.list_flights(options=options)),
        "DoPut": lambda: _do_put(client, options),
    }
    errors = {}
    for name, call in calls.items():
        try:
            call()
            errors[name] = None
        except (flight.FlightError, pa.ArrowException, OSError) as e:
            errors[name] = e
    return errors


def refused(err) -> bool:
    """Whether an RPC failed for want of valid credentials (pyarrow raises
    FlightUnauthenticatedError for most calls and a plain OSError for some)."""
    return err is not None and "unauthenticated" in str(err).lower()


def _do_put(client, options):
    table = pa.table({"a": [1]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("puts"), table.schema, options)
    writer.write_table(table)
    writer.close()


def test_every_rpc_refuses_missing_wrong_expired_or_foreign_credentials(
        secured, make_node, users_file):
    client, good = login(secured, "root", "r00t")
    ticket = client.get_flight_info(statement_query("SELECT 1"), good).endpoints[0].ticket
    assert not any(refused(e) for e in every_rpc(client, good, ticket).values())

    with pytest.raises(flight.FlightUnauthenticatedError, match="wrong user name or password"):
        login(secured, "root", "nope")
    with pytest.raises(flight.FlightUnauthenticatedError):
        login(secured, "nobody", "r00t")

    # A node of another cluster secret signs its own tokens; they mean nothing here.
    other = make_node("--auth-users", str(users_file), "--auth-secret", "another-secret-0123456789")
    _, foreign = login(other, "root", "r00t")
    _, token = client.authenticate_basic_token(b"root", b"r00t")
    tampered = token[:-3] + (b"AAA" if not token.endswith(b"AAA") else b"BBB")
    for name, options in {
        "none": flight.FlightCallOptions(),
        "wrong": flight.FlightCallOptions(headers=[(b"authorization", b"Bearer abc.def")]),
        "tampered": flight.FlightCallOptions(headers=[(b"authorization", tampered)]),
        "scheme": flight.FlightCallOptions(headers=[(b"authorization", b"Token xyz")]),
        "foreign": foreign,
    }.items():
        errors = every_rpc(client, options, ticket)
        for rpc, err in errors.items():
            assert refused(err), (name, rpc, err)

    # Expiry: a token from a node with a one-second lifetime stops working.
    short = make_node("--auth-users", str(users_file), "--auth-secret", SECRET, "--token-ttl", "1s")
    short_client, opts = login(short, "rita", "r-pass")
    list(short_client.list_actions(opts))
    deadline = time.monotonic() + 15
    while True:
        try:
            list(short_client.list_actions(opts))
        except flight.FlightUnauthenticatedError as e:
            assert "expired" in str(e)
            break
        assert time.monotonic() < deadline, "the token never expired"
        time.sleep(0.2)
    # Tokens of one node are valid on another node with the same secret and cluster.
    _, from_secured = login(secured, "rita", "r-pass")
    list(short_client.list_actions(from_secured))


def test_roles_hold_for_queries_ingest_ddl_and_admin_actions(secured):
    data = pa.table({"id": [1, 2, 3]})
    with adbc(secured, "wendy", "w-pass") as conn:
        with conn.cursor() as cur:
            cur.adbc_ingest("t", data, mode="create")
            cur.execute("CREATE TABLE u (a INTEGER)")
        assert query(conn, "SELECT sum(id) AS s FROM t").column("s")[0].as_py() == 6

    with adbc(secured, "rita", "r-pass") as conn:
        assert query(conn, "SELECT count(*) AS n FROM t").column("n")[0].as_py() == 3
        with conn.cursor() as cur:
            with pytest.raises(adbc_driver_manager.Error, match="may not ingest"):
                cur.adbc_ingest("t", data, mode="append")
            for sql in ["INSERT INTO t VALUES (4)", "DROP TABLE t", "CREATE TABLE v (a INT)",
                        "ALTER TABLE t ADD COLUMN b INT", "CREATE TABLE w AS SELECT 1 AS a"]:
                with pytest.raises(adbc_driver_manager.Error, match="may not change tables"):
                    cur.execute(sql)
        assert query(conn, "SELECT count(*) AS n FROM t").column("n")[0].as_py() == 3

    for user, password, allowed in [("rita", "r-pass", set()), ("wendy", "w-pass", {"skein.flush"}),
                                    ("root", "r00t", {"skein.flush", "skein.snapshot"})]:
        client, opts = login(secured, user, password)
        for action in ["skein.flush", "skein.snapshot"]:
            if action in allowed:
                list(client.do_action(flight.Action(action, b""), opts))
            else:
                with pytest.raises(flight.FlightError, match="may not"):
                    list(client.do_action(flight.Action(action, b""), opts))
        client.close()

    # Without credentials, ADBC gets nothing at all.
    with flightsql.connect(secured.uri, autocommit=True) as conn:
        with pytest.raises(adbc_driver_manager.Error, match="(?i)unauthenticated|authentication"):
            query(conn, "SELECT 1")


def test_the_cli_logs_in_and_is_held_to_its_role(secured, tmp_path):
    import os
    import subprocess
    from conftest import cli_bin
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env["SKEIN_HISTORY"] = str(tmp_path / "history")

    def skein(*args, user, password):
        return subprocess.run([cli_bin(), "--uri", secured.uri, "--user", user, "--password", password,
                               *args], capture_output=True, text=True, env=env, timeout=120)

    made = skein("sql", "CREATE TABLE c (a INTEGER)", user="wendy", password="w-pass")
    assert made.returncode == 0, made.stderr
    got = skein("sql", "--format", "csv", "SELECT count(*) AS n FROM c", user="rita", password="r-pass")
    assert got.returncode == 0 and got.stdout.split() == ["n", "0"], (got.stdout, got.stderr)
    denied = skein("sql", "DROP TABLE c", user="rita", password="r-pass")
    assert denied.returncode != 0 and "may not change tables" in denied.stderr, denied.stderr
    wrong = skein("sql", "SELECT 1", user="rita", password="nope")
    assert wrong.returncode != 0 and "wrong user name or password" in wrong.stderr, wrong.stderr


def test_users_limited_to_tables_see_and_touch_only_those(secured):
    with adbc(secured, "wendy", "w-pass") as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", pa.table({"id": [1, 2]}), mode="create")
        cur.adbc_ingest("u", pa.table({"id": [3]}), mode="create")
        cur.adbc_ingest("w", pa.table({"id": [4]}), mode="create")

    with adbc(secured, "lena", "l-pass") as conn:
        assert query(conn, "SELECT sum(id) AS s FROM t").column("s")[0].as_py() == 3
        assert query(conn, "WITH x AS (SELECT id FROM main.t) SELECT count(*) AS n FROM x"
                     ).column("n")[0].as_py() == 2
        for sql in ["SELECT * FROM u", "SELECT * FROM t JOIN u USING (id)",
                    "SELECT * FROM t WHERE id IN (SELECT id FROM w)",
                    "SELECT table_name FROM information_schema.tables",
                    "SELECT * FROM other.main.u", "SELECT * FROM duckdb_tables()",
                    "SELECT * FROM pragma_table_info('u')"]:
            with pytest.raises(adbc_driver_manager.Error, match="may not read"):
                query(conn, sql)
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names = sorted(t["table_name"] for c in objects for s in c["catalog_db_schemas"] or []
                       for t in s["db_schema_tables"] or [])
        assert names == ["t"]

    with adbc(secured, "walt", "w2-pass") as conn, conn.cursor() as cur:
        cur.adbc_ingest("w", pa.table({"id": [5]}), mode="append")
        cur.execute("INSERT INTO w VALUES (6)")
        with pytest.raises(adbc_driver_manager.Error, match="may not use table"):
            cur.adbc_ingest("t", pa.table({"id": [9]}), mode="append")
        for sql in ["INSERT INTO t VALUES (9)", "CREATE TABLE w2 (a INT)", "DROP TABLE u"]:
            with pytest.raises(adbc_driver_manager.Error, match="may not use table"):
                cur.execute(sql)
        for sql in ["INSERT INTO w SELECT id FROM t", "DELETE FROM t WHERE id = 1", "UPDATE t SET id = 7"]:
            with pytest.raises(adbc_driver_manager.Error, match="may not read"):
                cur.execute(sql)
        assert query(conn, "SELECT count(*) AS n FROM w").column("n")[0].as_py() == 3
    # Maintenance actions on a table are held to the same limits.
    client, options = login(secured, "walt", "w2-pass")
    try:
        for kind in ["skein.flush", "skein.compact"]:
            with pytest.raises(flight.FlightError, match="may not use table"):
                list(client.do_action(flight.Action(kind, b"t"), options))
            assert len(list(client.do_action(flight.Action(kind, b"w"), options))) == 1
    finally:
        client.close()
    with adbc(secured, "wendy", "w-pass") as conn:
        assert query(conn, "SELECT count(*) AS n FROM t").column("n")[0].as_py() == 2
        assert query(conn, "SELECT count(*) AS n FROM u").column("n")[0].as_py() == 1
