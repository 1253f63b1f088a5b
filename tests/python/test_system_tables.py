"""System tables answer SQL: tables with their rows, files and buffers; files; nodes; the query
log. Checked against what the node was given and what lies in its data directory."""

import pyarrow as pa

from conftest import query


def test_system_tables_describe_the_node(node):
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", pa.table({"a": [1, 2, 3]}), mode="create")
        node.flush("t")
        cur.adbc_ingest("t", pa.table({"a": [4, 5]}), mode="append")
        cur.adbc_ingest("u", pa.table({"b": ["x"]}), mode="create")

        got = query(conn, "SELECT table_name, rows, files, buffered_rows, columns "
                          "FROM skein_tables ORDER BY table_name").to_pylist()
        assert got == [
            {"table_name": "t", "rows": 5, "files": 1, "buffered_rows": 2, "columns": 1},
            {"table_name": "u", "rows": 1, "files": 0, "buffered_rows": 1, "columns": 1},
        ]
        files = query(conn, "SELECT table_name, object_key, rows, bytes FROM skein_files").to_pylist()
        on_disk = list((node.data_dir / "objects").rglob("*.parquet"))
        assert len(files) == 1 == len(on_disk)
        assert files[0]["rows"] == 3 and files[0]["bytes"] == on_disk[0].stat().st_size
        assert on_disk[0].as_posix().endswith(files[0]["object_key"])
        assert query(conn, "SELECT node_id, state FROM skein_nodes").to_pylist() == [
            {"node_id": "node1", "state": "up"}]

        assert query(conn, "SELECT sum(a) AS s FROM t").column("s")[0].as_py() == 15
        log = query(conn, "SELECT query, rows, status, duration_ms FROM skein_query_log "
                          "WHERE query LIKE 'SELECT sum(a)%'").to_pylist()
        assert len(log) == 1 and log[0]["rows"] == 1 and log[0]["status"] == "ok"
        assert log[0]["duration_ms"] >= 0
        # Joins with user tables work like any table.
        joined = query(conn, "SELECT s.rows, count(*) AS n FROM skein_tables s JOIN t "
                             "ON s.table_name = 't' GROUP BY s.rows").to_pylist()
        assert joined == [{"rows": 5, "n": 5}]
