"""TLS and mutual TLS on the Flight endpoint, with certificates made by openssl for the test."""

import os
import subprocess

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
import pytest

from conftest import query, statement_query


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d, ca, name, *, server):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                   else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.pem", cwd=d)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "ca", "server", server=True)
    make_cert(d, "ca", "client", server=False)
    make_cert(d, "other-ca", "stranger", server=False)
    return d


def tls_uri(node):
    return f"grpc+tls://{node.flight_addr}"


def select_one(client):
    info = client.get_flight_info(statement_query("SELECT 42 AS x"))
    return client.do_get(info.endpoints[0].ticket).read_all().column(0)[0].as_py()


def test_tls_serves_trusting_clients_and_refuses_others(pki, make_node, tmp_path):
    n = make_node("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"))
    ca = (pki / "ca.pem").read_bytes()
    assert select_one(flight.FlightClient(tls_uri(n), tls_root_certs=ca)) == 42
    # ADBC, and the skein CLI, over TLS.
    with flightsql.connect(tls_uri(n), db_kwargs={
            adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: ca.decode()},
            autocommit=True) as conn:
        assert query(conn, "SELECT 7 AS y").column("y")[0].as_py() == 7
    from conftest import cli_bin
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    out = subprocess.run([cli_bin(), "--uri", tls_uri(n), "--tls-ca", str(pki / "ca.pem"), "sql",
                          "--format", "csv", "SELECT 5 AS z"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["z", "5"], out.stderr
    # A client that does not trust the CA, or that speaks plain gRPC, gets nothing.
    with pytest.raises(flight.FlightError):
        select_one(flight.FlightClient(tls_uri(n), tls_root_certs=(pki / "other-ca.pem").read_bytes()))
    with pytest.raises(flight.FlightError):
        select_one(flight.FlightClient(f"grpc://{n.flight_addr}"))
    assert select_one(flight.FlightClient(tls_uri(n), tls_root_certs=ca)) == 42


def test_mutual_tls_needs_a_client_certificate_from_the_ca(pki, make_node):
    n = make_node("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                  "--tls-client-ca", str(pki / "ca.pem"))
    ca = (pki / "ca.pem").read_bytes()
    good = flight.FlightClient(tls_uri(n), tls_root_certs=ca,
                               cert_chain=(pki / "client.pem").read_bytes(),
                               private_key=(pki / "client.key").read_bytes())
    assert select_one(good) == 42
    with pytest.raises(flight.FlightError):
        select_one(flight.FlightClient(tls_uri(n), tls_root_certs=ca))
    with pytest.raises(flight.FlightError):
        select_one(flight.FlightClient(tls_uri(n), tls_root_certs=ca,
                                       cert_chain=(pki / "stranger.pem").read_bytes(),
                                       private_key=(pki / "stranger.key").read_bytes()))
    assert select_one(good) == 42


def test_bad_tls_files_stop_the_node_with_a_clear_error(pki, tmp_path):
    from conftest import server_bin
    for flags, message in [
        (["--tls-cert", str(pki / "missing.pem"), "--tls-key", str(pki / "server.key")], "missing.pem"),
        (["--tls-cert", str(pki / "server.pem")], "tls-key"),
        (["--tls-cert", str(pki / "server.csr"), "--tls-key", str(pki / "server.key")], "TLS"),
    ]:
        out = subprocess.run([server_bin(), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                              "--data-dir", str(tmp_path / "d"), *flags],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and message in out.stderr, (flags, out.stderr[-1500:])


def test_nodes_of_a_cluster_talk_to_each_other_over_mutual_tls(pki, seaweed, bucket, redis_server,
                                                               tmp_path, monkeypatch):
    """Two nodes with TLS and required client certificates: fragments between them go over
    TLS with each node's certificate, and a scatter scan's endpoints name TLS locations."""
    import time

    import pyarrow as pa

    from cluster import Cluster

    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    flags = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
             "--tls-client-ca", str(pki / "ca.pem"), "--tls-peer-ca", str(pki / "ca.pem")]
    ca = (pki / "ca.pem").read_bytes()

    def client(node):
        return flight.FlightClient(tls_uri(node), tls_root_certs=ca,
                                   cert_chain=(pki / "client.pem").read_bytes(),
                                   private_key=(pki / "client.key").read_bytes())

    def run(node, sql):
        c = client(node)
        info = c.get_flight_info(statement_query(sql))
        return info, c.do_get(info.endpoints[0].ticket).read_all()

    with Cluster(seaweed, bucket, redis_server, tmp_path / "nodes", *flags) as c:
        n1, n2 = c.add_node(), c.add_node()
        deadline = time.monotonic() + 30
        while run(n1, "SELECT count(*) AS n FROM skein_nodes")[1].column(0)[0].as_py() != 2:
            assert time.monotonic() < deadline, "the nodes did not see each other"
            time.sleep(0.1)
        # Rows buffered on both nodes: a query on either needs the other.
        for node, lo in [(n1, 0), (n2, 100)]:
            data = pa.table({"id": pa.array(range(lo, lo + 100), pa.int64())})
            writer, _ = client(node).do_put(
                flight.FlightDescriptor.for_path("t"), data.schema)
            writer.write_table(data)
            writer.close()
        _, got = run(n1, "SELECT count(*) AS n, sum(id) AS s FROM t")
        assert got.to_pylist() == [{"n": 200, "s": sum(range(200))}]
        _, log = run(n1, "SELECT shape, shipped_rows FROM skein_query_log "
                         "WHERE query = 'SELECT count(*) AS n, sum(id) AS s FROM t'")
        assert log.to_pylist() == [{"shape": "partial", "shipped_rows": 1}], log.to_pylist()
        # A scatter scan: the peer's endpoint is a TLS location, read with the client's own
        # certificate.
        info = client(n2).get_flight_info(statement_query("SELECT id FROM t WHERE id % 10 = 0"))
        locations = [str(loc.uri, "utf-8") if isinstance(loc.uri, bytes) else str(loc.uri)
                     for e in info.endpoints for loc in e.locations]
        assert locations == [f"grpc+tls://{n1.advertise_addr}"], locations
        ids = []
        for e in info.endpoints:
            target = client(n1) if e.locations else client(n2)
            ids += target.do_get(e.ticket).read_all().column("id").to_pylist()
        assert sorted(ids) == list(range(0, 200, 10))
