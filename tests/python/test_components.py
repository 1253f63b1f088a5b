"""The harness for real Redis and SeaweedFS works: processes start, answer, and restart as promised."""

import os

import pyarrow.fs as pafs
import pytest

from components import S3Error, s3_request


def test_redis_starts_answers_and_restarts_empty(redis_server):
    c = redis_server.client()
    assert c.ping()
    c.set("skein:k", b"v")
    assert c.get("skein:k") == b"v"
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"

    port = redis_server.port
    redis_server.restart()
    assert redis_server.port == port
    c = redis_server.client()
    assert c.dbsize() == 0  # nothing is saved

    c.set("again", b"1")
    redis_server.flushall()
    assert c.dbsize() == 0


def test_seaweed_bucket_list_and_restart_keeps_objects(seaweed, bucket):
    assert seaweed.endpoint.startswith("http://127.0.0.1:")
    assert seaweed.env()["AWS_ACCESS_KEY_ID"] == seaweed.access_key
    assert bucket in seaweed.list_buckets()
    assert seaweed.list_keys(bucket) == []

    fs = seaweed.filesystem()
    with fs.open_output_stream(f"{bucket}/t/a.parquet") as f:
        f.write(b"small")
    big = os.urandom(12 * 1024 * 1024)  # over pyarrow's part size: a multipart upload
    with fs.open_output_stream(f"{bucket}/t/big.bin") as f:
        f.write(big)
    seaweed.put_object(bucket, "u/x y+z.txt", b"odd key")

    assert seaweed.list_keys(bucket) == ["t/a.parquet", "t/big.bin", "u/x y+z.txt"]
    assert seaweed.list_keys(bucket, "t/") == ["t/a.parquet", "t/big.bin"]
    assert seaweed.list_objects(bucket, "t/")["t/big.bin"] == len(big)
    files = fs.get_file_info(pafs.FileSelector(f"{bucket}/t"))
    assert sorted(i.path for i in files) == [f"{bucket}/t/a.parquet", f"{bucket}/t/big.bin"]

    seaweed.stop()
    with pytest.raises(OSError):
        seaweed.list_keys(bucket)
    seaweed.start()

    assert seaweed.list_keys(bucket) == ["t/a.parquet", "t/big.bin", "u/x y+z.txt"]
    assert seaweed.get_object(bucket, "t/a.parquet") == b"small"
    with fs.open_input_stream(f"{bucket}/t/big.bin") as f:  # same endpoint after the restart
        assert f.read() == big


def test_seaweed_enforces_credentials_and_has_no_implicit_buckets(seaweed, bucket):
    seaweed.put_object(bucket, "k", b"v")

    status, _, _ = s3_request(seaweed.endpoint, seaweed.access_key, "not-the-secret", seaweed.region,
                              "GET", f"/{bucket}", {"list-type": "2"})
    assert status == 403

    with pytest.raises(S3Error) as e:
        seaweed.put_object("nosuchbucket-" + bucket, "k", b"v")
    assert e.value.code == "NoSuchBucket"
