"""Crash test of the durability contract: a node is killed with SIGKILL at random moments while
several clients ingest (and while buffers flush), restarted, and checked each time: every
acknowledged row is present exactly once, and no row appears that was never sent.

The number of kill cycles is SKEIN_CRASH_CYCLES (25 by default; `scripts/crash-test.sh` runs
1,000). SKEIN_CRASH_SEED makes a run repeatable.
"""

import os
import random
import signal
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from conftest import Node

CYCLES = int(os.environ.get("SKEIN_CRASH_CYCLES", "25"))
SEED = int(os.environ.get("SKEIN_CRASH_SEED", str(random.randrange(1 << 30))))
WRITERS = 4
# Past this many rows the table is dropped after a check, so long runs stay fast.
RESET_ROWS = 300_000
SCHEMA = pa.schema([("id", pa.int64()), ("writer", pa.int32()), ("note", pa.string())])


class Writer(threading.Thread):
    """Sends batches with unique ids until told to stop or the node goes away; records what it
    sent and what was acknowledged."""

    def __init__(self, node: Node, number: int, cycle: int, rng: random.Random, use_adbc: bool):
        super().__init__(daemon=True)
        self.node = node
        self.number = number
        self.cycle = cycle
        self.rng = random.Random(rng.random())
        self.use_adbc = use_adbc
        self.sent: list[np.ndarray] = []
        self.acked: list[np.ndarray] = []
        self.stop = threading.Event()

    def batch(self, serial: int) -> pa.Table:
        rows = self.rng.randint(1, 400)
        base = ((self.cycle * 64 + self.number) << 32) | (serial << 12)
        ids = np.arange(base, base + rows, dtype=np.int64)
        self.sent.append(ids)
        return pa.table(
            {
                "id": ids,
                "writer": np.full(rows, self.number, dtype=np.int32),
                "note": [f"c{self.cycle} w{self.number} s{serial}"] * rows,
            },
            schema=SCHEMA,
        )

    def run(self):
        try:
            if self.use_adbc:
                self.run_adbc()
            else:
                self.run_flight()
        except Exception:  # the node was killed: what was acknowledged is recorded
            pass

    def run_flight(self):
        client = flight.FlightClient(self.node.uri)
        serial = 0
        while not self.stop.is_set():
            table = self.batch(serial)
            serial += 1
            writer, _ = client.do_put(flight.FlightDescriptor.for_path("crash"), SCHEMA)
            writer.write_table(table)
            writer.close()  # returns once the node acknowledged every row
            self.acked.append(table.column("id").to_numpy())

    def run_adbc(self):
        with self.node.connect() as conn:
            serial = 0
            while not self.stop.is_set():
                table = self.batch(serial)
                serial += 1
                with conn.cursor() as cur:
                    cur.adbc_ingest("crash", table, mode="create_append")
                self.acked.append(table.column("id").to_numpy())


def concat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def stored_ids(node: Node) -> np.ndarray:
    try:
        with node.connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT id FROM crash")
            return cur.fetch_arrow_table().column("id").to_numpy()
    except Exception as e:  # no table yet: nothing was acknowledged
        if "does not exist" in str(e):
            return np.empty(0, dtype=np.int64)
        raise


def test_sigkill_during_ingest_and_flush_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(SEED)
    print(f"crash test: {CYCLES} cycles, seed {SEED}")
    flags = (
        "--flush-rows", "3000",
        "--flush-interval", "300ms",
        "--wal-segment-bytes", "1048576",
    )
    node = Node(tmp_path / "data", *flags)
    sent, acked = [], []
    flushes = replayed_cycles = 0
    for cycle in range(CYCLES):
        node.start()
        ids = stored_ids(node)
        all_sent, all_acked = concat(sent), concat(acked)
        context = f"cycle {cycle}, seed {SEED}"
        assert len(np.unique(ids)) == len(ids), f"duplicate rows after restart ({context})"
        missing = np.setdiff1d(all_acked, ids)
        assert len(missing) == 0, f"{len(missing)} acknowledged rows lost ({context})"
        unknown = np.setdiff1d(ids, all_sent)
        assert len(unknown) == 0, f"{len(unknown)} rows never sent ({context})"
        if any('"WAL recovered"' in line and '"replayed":0' not in line for line in node.lines):
            replayed_cycles += 1
        if len(ids) > RESET_ROWS:
            with node.connect() as conn, conn.cursor() as cur:
                cur.execute("DROP TABLE crash")
            sent, acked = [], []

        if rng.random() < 0.1:
            # Killed before any write: the restart then finds an empty last WAL segment.
            node.stop(signal.SIGKILL)
            continue
        writers = [Writer(node, n, cycle, rng, use_adbc=(n == 0)) for n in range(WRITERS)]
        for w in writers:
            w.start()
        # The kill lands at a random moment: mid-batch, mid-fsync, mid-flush.
        time.sleep(rng.uniform(0.05, 1.2))
        flushes += sum(1 for line in node.lines if '"flushed"' in line)
        node.stop(signal.SIGKILL)
        for w in writers:
            w.stop.set()
            w.join(60)
            assert not w.is_alive(), "a writer hung after the node was killed"
            sent.extend(w.sent)
            acked.extend(w.acked)

    node.start()
    ids = stored_ids(node)
    assert len(np.unique(ids)) == len(ids)
    assert len(np.setdiff1d(concat(acked), ids)) == 0
    assert len(np.setdiff1d(ids, concat(sent))) == 0
    node.stop()
    print(f"crash test: {flushes} flushes seen, {replayed_cycles} restarts replayed WAL records")
    # The kills must have met both states the contract covers.
    assert flushes > 0, "no flush happened before a kill: the flush path was not exercised"
    assert replayed_cycles > 0, "no restart replayed the WAL: the replay path was not exercised"
