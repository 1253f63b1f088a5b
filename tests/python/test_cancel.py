"""CancelFlightInfo stops a running query; the node keeps serving."""

import threading
import time

from conftest import CANCELLED, cancel_flight_info, query, statement_query

# Long enough to still be running when the cancel arrives (minutes on this machine).
SLOW = "SELECT count(*) AS n FROM range(1000000000000) a WHERE a.range % 7 = 3"
DEADLINE_S = 30


def test_cancel_flight_info_stops_a_running_query(node):
    client = node.flight_client()
    info = client.get_flight_info(statement_query(SLOW))
    outcome = {}

    def fetch():
        try:
            outcome["table"] = client.do_get(info.endpoints[0].ticket).read_all()
        except Exception as e:  # the expected path: the stream ends in error
            outcome["error"] = e

    started = time.monotonic()
    worker = threading.Thread(target=fetch)
    worker.start()
    # Wait until DuckDB is running the query: the query counter in /metrics moves.
    deadline = time.monotonic() + DEADLINE_S
    while "skein_queries_total 1" not in node.http_get("/metrics"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert cancel_flight_info(client, info) == CANCELLED
    worker.join(DEADLINE_S)
    assert not worker.is_alive(), "the query did not stop"
    assert "error" in outcome and "cancel" in str(outcome["error"]).lower(), outcome
    assert time.monotonic() - started < DEADLINE_S
    client.close()
    with node.connect() as conn:
        assert query(conn, "SELECT 42 AS x").to_pylist() == [{"x": 42}]


def test_cancel_before_fetch(node):
    client = node.flight_client()
    info = client.get_flight_info(statement_query(SLOW))
    assert cancel_flight_info(client, info) == CANCELLED
    try:
        client.do_get(info.endpoints[0].ticket).read_all()
        raise AssertionError("a cancelled query still ran")
    except Exception as e:  # noqa: BLE001 - pyarrow maps CANCELLED to its own error type
        assert "cancel" in str(e).lower()
    client.close()
