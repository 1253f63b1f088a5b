"""A local skein cluster for end-to-end tests: several `skein-server` processes sharing one Redis
(membership and catalog) and one SeaweedFS bucket (Parquet files).

Each node gets its own id (n1, n2, …), data directory and fixed free loopback ports, and advertises
`127.0.0.1:<port>` to its peers. Heartbeats are short (`--heartbeat-ttl 2s`), so a killed node
leaves every ring within about two seconds; buffers flush only when asked (`node.flush()`), so a
test knows which node holds which unflushed rows.

    cluster = Cluster(seaweed, bucket, redis_server, tmp_path).start(3)
    cluster.wait_members(cluster["n1"], 3)
    cluster.kill(cluster["n3"])        # SIGKILL
    cluster.wait_members(cluster["n1"], 2)
    cluster.restart(cluster["n3"])     # same id, data directory and ports
    cluster.close()

The processes inherit this process's environment: the S3 credentials (`seaweed.env()`) must be in
it when a node starts (the `aws_env` fixture of the tests, or `pytest.MonkeyPatch.context()`).
"""

import signal
import time
from pathlib import Path

import adbc_driver_manager

from components import free_ports
from conftest import Node, query

CLUSTER_NAME = "ci"
HEARTBEAT_TTL = "2s"
PEER_TIMEOUT_S = 20
POLL_S = 0.1


class ClusterNode(Node):
    """A node of a `Cluster`: a `Node` with its id and fixed ports."""

    def __init__(self, node_id: str, data_dir: Path, port: int, http_port: int, *extra: str):
        self.node_id = node_id
        self.port = port
        self.http_port = http_port
        super().__init__(data_dir, *extra, listen=f"127.0.0.1:{port}",
                         http_listen=f"127.0.0.1:{http_port}")

    @property
    def advertise_addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ClusterNode {self.node_id} {self.advertise_addr} {state}>"


class Cluster:
    """Nodes of one cluster; every node started here is stopped by `close()`."""

    def __init__(self, seaweed, bucket: str, redis, base_dir: Path, *extra: str,
                 cluster_name: str = CLUSTER_NAME, heartbeat_ttl: str = HEARTBEAT_TTL,
                 peer_timeout_s: int = PEER_TIMEOUT_S):
        self.seaweed = seaweed
        self.bucket = bucket
        self.redis = redis
        self.base_dir = Path(base_dir)
        self.extra = list(extra)
        self.cluster_name = cluster_name
        self.heartbeat_ttl = heartbeat_ttl
        self.peer_timeout_s = peer_timeout_s
        self.nodes: dict = {}  # node id -> ClusterNode, in the order they were added

    # -- nodes

    def flags(self, node: ClusterNode) -> list:
        return [
            "--node-id", node.node_id,
            "--advertise-addr", node.advertise_addr,
            "--redis-url", self.redis.url,
            "--s3-endpoint", self.seaweed.endpoint, "--s3-bucket", self.bucket,
            "--cluster-name", self.cluster_name,
            "--storage-timeout", "5s",
            "--heartbeat-ttl", self.heartbeat_ttl,
            "--peer-timeout", f"{self.peer_timeout_s}s",
            # Buffers flush only when a test asks; which node holds which rows stays known.
            "--flush-interval", "1h",
            *self.extra,
        ]

    def add_node(self, node_id: str = None, *extra: str) -> ClusterNode:
        """Starts one more node (n<k+1> unless named) and returns it once it is healthy. It joins
        the others' rings within a heartbeat; `wait_members` waits for that."""
        node_id = node_id or f"n{len(self.nodes) + 1}"
        assert node_id not in self.nodes, f"node {node_id} already exists"
        port, http_port = free_ports(2)
        node = ClusterNode(node_id, self.base_dir / node_id, port, http_port)
        node.extra = self.flags(node) + list(extra)
        self.nodes[node_id] = node
        node.start()
        return node

    def start(self, count: int = 3) -> "Cluster":
        """Starts `count` nodes and waits until every one sees all of them."""
        try:
            for _ in range(count):
                self.add_node()
            for node in self.live():
                self.wait_members(node, count)
        except BaseException:
            self.close()
            raise
        return self

    def __getitem__(self, node_id: str) -> ClusterNode:
        return self.nodes[node_id]

    def live(self) -> list:
        return [n for n in self.nodes.values() if n.running]

    def others(self, node: ClusterNode) -> list:
        return [n for n in self.live() if n is not node]

    def stop(self, node: ClusterNode) -> int:
        """SIGTERM: the node flushes its buffers, leaves the ring and exits; returns its exit
        code (the harness kills it after 60 s)."""
        return node.stop(signal.SIGTERM)

    def kill(self, node: ClusterNode) -> int:
        """SIGKILL: no flush, no goodbye; its heartbeat key expires within one TTL."""
        return node.stop(signal.SIGKILL)

    def restart(self, node: ClusterNode) -> ClusterNode:
        """Starts a stopped node again: same id, data directory (its WAL) and ports."""
        assert not node.running, f"{node.node_id} is running"
        node.start()
        return node

    def close(self):
        for node in reversed(list(self.nodes.values())):
            node.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- membership

    def members(self, node: ClusterNode) -> list:
        """`skein_nodes` as `node` sees it, as dicts."""
        with node.connect() as conn:
            return query(conn, "SELECT * FROM skein_nodes ORDER BY node_id").to_pylist()

    def wait_members(self, node: ClusterNode, count: int, deadline_s: float = 30) -> None:
        """Polls `SELECT count(*) FROM skein_nodes WHERE state = 'up'` on `node` until it is
        `count`; fails after `deadline_s` with what it saw last."""
        deadline = time.monotonic() + deadline_s
        seen = None
        while True:
            try:
                with node.connect() as conn:
                    seen = query(conn, "SELECT count(*) AS n FROM skein_nodes WHERE state = 'up'"
                                 ).column("n")[0].as_py()
            except adbc_driver_manager.Error as e:  # the node may be busy rebuilding its ring
                seen = f"error: {e}"
            if seen == count:
                return
            if time.monotonic() > deadline:
                try:
                    table = self.members(node)
                except adbc_driver_manager.Error as e:
                    table = f"(skein_nodes failed: {e})"
                raise AssertionError(
                    f"{node.node_id} did not see {count} nodes up within {deadline_s} s; last saw "
                    f"{seen!r}; skein_nodes: {table}")
            time.sleep(POLL_S)

    def wait_all_members(self, count: int = None, deadline_s: float = 30) -> None:
        """Every running node sees `count` (default: all running nodes) up."""
        live = self.live()
        for node in live:
            self.wait_members(node, len(live) if count is None else count, deadline_s)
