"""Arrow's common types survive ingest, buffering, flushing to Parquet and querying."""

import datetime
import decimal

import pyarrow as pa

from conftest import query


def typed_table() -> pa.Table:
    utc = datetime.timezone.utc
    def ts(micros):
        return [datetime.datetime(2024, 5, 6, 7, 8, 9, micros), None, datetime.datetime(1969, 12, 31, 23, 59, 59)]

    return pa.table(
        {
            "i8": pa.array([-128, None, 127], pa.int8()),
            "i16": pa.array([-32768, 0, 32767], pa.int16()),
            "i32": pa.array([-(2**31), None, 2**31 - 1], pa.int32()),
            "i64": pa.array([-(2**63), 0, 2**63 - 1], pa.int64()),
            "u8": pa.array([0, None, 255], pa.uint8()),
            "u16": pa.array([0, 1, 65535], pa.uint16()),
            "u32": pa.array([0, None, 2**32 - 1], pa.uint32()),
            "u64": pa.array([0, 1, 2**64 - 1], pa.uint64()),
            "f32": pa.array([1.5, None, -3.25], pa.float32()),
            "f64": pa.array([1e300, -0.0, None], pa.float64()),
            "dec": pa.array([decimal.Decimal("12345678901234567890.0123456789"), None, decimal.Decimal("-1.5")], pa.decimal128(38, 10)),
            "s": pa.array(["héllo", None, ""], pa.string()),
            "ls": pa.array(["large", "utf8", None], pa.large_string()),
            "bin": pa.array([b"\x00\x01", None, b""], pa.binary()),
            "b": pa.array([True, False, None], pa.bool_()),
            "d": pa.array([datetime.date(2024, 2, 29), None, datetime.date(1900, 1, 1)], pa.date32()),
            "ts_s": pa.array(ts(0), pa.timestamp("s")),
            "ts_ms": pa.array(ts(123000), pa.timestamp("ms")),
            "ts_us": pa.array(ts(123456), pa.timestamp("us")),
            "ts_ns": pa.array(ts(123456), pa.timestamp("ns")),
            "tstz": pa.array([t.replace(tzinfo=utc) if t else None for t in ts(123456)], pa.timestamp("us", tz="UTC")),
            "lst": pa.array([[1, 2, None], None, []], pa.list_(pa.int32())),
            "st": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": "z"}], pa.struct([("a", pa.int64()), ("b", pa.string())])),
        }
    )


# What each column reads back as: DuckDB's type for the stored column. Strings and binaries come
# back in their 32-bit-offset forms; everything else keeps its Arrow type.
EXPECTED_TYPES = {
    "ls": pa.string(),
}


def same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Type equality that ignores the name of a list's child field."""
    if pa.types.is_list(a) and pa.types.is_list(b):
        return same_type(a.value_type, b.value_type)
    return a == b


def check(got: pa.Table, want: pa.Table):
    assert got.column_names == want.column_names
    for name in want.column_names:
        expected_type = EXPECTED_TYPES.get(name, want.schema.field(name).type)
        assert same_type(got.schema.field(name).type, expected_type), (name, got.schema.field(name).type)
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_round_trip_buffered_flushed_and_restarted(make_node, tmp_path):
    data = typed_table()
    node = make_node(data_dir=tmp_path / "types")
    with node.connect() as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("typed", data, mode="create") == 3
        check(query(conn, "SELECT * FROM typed ORDER BY i16"), data)
    node.flush()
    with node.connect() as conn:
        check(query(conn, "SELECT * FROM typed ORDER BY i16"), data)
    node.stop()
    node.start()
    with node.connect() as conn:
        check(query(conn, "SELECT * FROM typed ORDER BY i16"), data)
