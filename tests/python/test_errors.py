"""Bad input gets the right gRPC code and a message naming the problem; the node keeps serving
and nothing already accepted is lost."""

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import flight_sql_any, query, statement_query


@pytest.fixture
def loaded(node):
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("good", pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "c"]}), mode="create")
    return node


def still_serving(node):
    with node.connect() as conn:
        assert query(conn, "SELECT count(*) AS n, sum(id) AS s FROM good").to_pylist() == [{"n": 3, "s": 6}]


def info_error(node, sql):
    client = node.flight_client()
    try:
        client.get_flight_info(statement_query(sql))
    except Exception as e:  # noqa: BLE001 - pyarrow raises per gRPC code, checked below
        return e
    finally:
        client.close()
    raise AssertionError(f"{sql!r} did not fail")


def test_query_errors(loaded):
    e = info_error(loaded, "SELECT * FROM missing_table")
    assert "missing_table" in str(e)
    e = info_error(loaded, "SELECT no_such_column FROM good")
    assert "no_such_column" in str(e)
    e = info_error(loaded, "SELEC 1")
    assert "syntax error" in str(e).lower()
    e = info_error(loaded, "")
    assert "empty" in str(e)
    e = info_error(loaded, "SELECT 1; SELECT 2")
    assert "one SQL statement" in str(e)
    e = info_error(loaded, "COPY good TO 'x.csv'")
    assert "not supported" in str(e)
    still_serving(loaded)


def test_error_codes(loaded):
    # pyarrow turns gRPC codes into Arrow errors: NOT_FOUND -> KeyError, INVALID_ARGUMENT ->
    # ArrowInvalid, UNIMPLEMENTED -> NotImplementedError, ALREADY_EXISTS -> "already exists".
    client = loaded.flight_client()
    with pytest.raises(pa.ArrowKeyError, match="not found error"):
        client.get_flight_info(statement_query("SELECT * FROM missing_table"))
    with pytest.raises(pa.ArrowNotImplementedError, match="UPDATE with FROM.* is not supported"):
        client.get_flight_info(statement_query("UPDATE good SET id = 1 FROM good AS g2"))
    with pytest.raises(pa.ArrowInvalid, match="invalid argument error"):
        client.get_flight_info(statement_query("SELEC 1"))
    with pytest.raises(pa.ArrowInvalid, match="no_such_column"):
        client.get_flight_info(statement_query("SELECT no_such_column FROM good"))
    client.close()
    with loaded.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.adbc_ingest("good", pa.table({"id": [1]}), mode="create")
        assert e.value.status_code == adbc_driver_manager.AdbcStatusCode.ALREADY_EXISTS


def test_schema_mismatch_on_ingest(loaded):
    with loaded.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match='"id"'):
            cur.adbc_ingest("good", pa.table({"id": ["not a number"]}), mode="append")
        with pytest.raises(adbc_driver_manager.Error, match='"other"'):
            cur.adbc_ingest("good", pa.table({"other": [1]}), mode="append")
    still_serving(loaded)


def test_schema_change_mid_stream(loaded):
    client = loaded.flight_client()
    first = pa.table({"id": pa.array([10], pa.int64()), "s": ["x"]})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("good"), first.schema)
    writer.write_table(first)
    # A batch with a different schema cannot be written through the same writer; a second
    # stream with an incompatible schema is refused as a whole.
    writer.close()
    bad = pa.table({"id": pa.array(["text"])})
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("good"), bad.schema)
    with pytest.raises(pa.ArrowInvalid, match='"id"'):
        writer.write_table(bad)
        writer.close()
    client.close()
    with loaded.connect() as conn:
        assert query(conn, "SELECT count(*) AS n FROM good").to_pylist() == [{"n": 4}]


def test_malformed_tickets_and_commands(loaded):
    client = loaded.flight_client()
    with pytest.raises(pa.ArrowInvalid):
        client.do_get(flight.Ticket(b"\xff\x00garbage")).read_all()
    with pytest.raises(pa.ArrowInvalid, match="malformed statement ticket"):
        client.do_get(flight.Ticket(flight_sql_any("TicketStatementQuery", b"\x0a\x03abc"))).read_all()
    with pytest.raises(pa.ArrowInvalid):
        client.get_flight_info(flight.FlightDescriptor.for_command(b"\x01\x02\x03"))
    with pytest.raises(pa.ArrowNotImplementedError, match="unknown action"):
        list(client.do_action(flight.Action("no.such.action", b"")))
    client.close()
    still_serving(loaded)


def test_prepared_statement_errors(loaded):
    with loaded.connect() as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="missing_table"):
            cur.execute("SELECT * FROM missing_table WHERE id = ?", (1,))
    still_serving(loaded)


def test_sql_cannot_reach_the_host(loaded):
    with loaded.connect() as conn:
        for sql in [
            "SELECT * FROM read_csv('/etc/passwd')",
            f"SELECT * FROM read_text('{loaded.data_dir / 'catalog.json'}')",
            "COPY good TO '/tmp/skein-escape.csv'",
            "ATTACH '/tmp/skein-escape.db'",
            "INSTALL httpfs",
            "SET threads = 1",
        ]:
            with pytest.raises(adbc_driver_manager.Error):
                query(conn, sql)
    still_serving(loaded)
