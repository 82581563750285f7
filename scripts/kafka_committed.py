"""What a read_committed consumer would see, reconstructed from raw record batches (the Kafka
tests use it: scripts/setup.sh installs aiokafka into .venv).

tansu 0.6 (a Kafka-protocol broker) writes transaction markers but sends an
empty aborted-transactions list in fetch responses, so clients show aborted data even with
read_committed. This reader fetches everything with read_uncommitted, keeps each batch's producer
id and the control markers, and drops the records of transactions that ended in ABORT (and those
still open at the end, which a read_committed consumer would not see yet either).

Needs aiokafka (tested with 0.14.0 from PyPI). As a module: committed(bootstrap, topic) ->
({partition: [(offset, key, value, headers)]}, records without a marker yet); as a command:
kafka_committed.py BOOTSTRAP TOPIC [--settled] prints one JSON object per committed record.
"""
import asyncio
import sys

from aiokafka import AIOKafkaConsumer
from aiokafka.consumer import fetcher as _f
from aiokafka.record.control_record import ABORT_MARKER, ControlRecord
from aiokafka.structs import TopicPartition

_meta = {}      # (topic, partition, offset) -> (producer_id, transactional)
_markers = []   # (topic, partition, offset, producer_id, aborted)


def _unpack(self):
    tp = self._tp
    records = self._records
    while records.has_next():
        batch = records.next_batch()
        if batch.is_control_batch:
            rec = next(batch)
            _markers.append((tp.topic, tp.partition, batch.base_offset, batch.producer_id,
                             ControlRecord.parse(rec.key) == ABORT_MARKER))
            self.next_fetch_offset = batch.next_offset
            continue
        for record in batch:
            if record.offset < self.next_fetch_offset:
                continue
            _meta[(tp.topic, tp.partition, record.offset)] = (batch.producer_id, batch.is_transactional)
            self.next_fetch_offset = record.offset + 1
            yield self._consumer_record(tp, record)
        self.next_fetch_offset = batch.next_offset


_f.PartitionRecords._unpack_records = _unpack


async def _read_all(bootstrap, topic, idle_ms):
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted",
                         enable_auto_commit=False, auto_offset_reset="earliest", group_id=None)
    await c.start()
    try:
        parts = sorted(c.partitions_for_topic(topic) or [])
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out = {p: [] for p in parts}
        while True:
            got = await c.getmany(*tps, timeout_ms=idle_ms)
            for tp, msgs in got.items():
                out[tp.partition].extend(msgs)
            done = True
            for tp in tps:
                if await c.position(tp) < ends[tp]:
                    done = False
            if done or not got:
                if done:
                    break
                # nothing came and not at the end: one more idle round, then give up
                got = await c.getmany(*tps, timeout_ms=idle_ms)
                if not got:
                    break
                for tp, msgs in got.items():
                    out[tp.partition].extend(msgs)
        return out
    finally:
        await c.stop()


def committed(bootstrap, topic, idle_ms=2000):
    """{partition: [(offset, key, value, headers)]} of committed records, and how many records
    belong to transactions with no marker yet (open, or whose marker the broker has not
    written yet)."""
    _meta.clear()
    _markers.clear()
    raw = asyncio.run(_read_all(bootstrap, topic, idle_ms))
    result = {}
    undecided = 0
    for p, msgs in raw.items():
        ends = {}   # producer_id -> list of (offset, aborted) markers in order
        for (t, part, off, pid, aborted) in _markers:
            if t == topic and part == p:
                ends.setdefault(pid, []).append((off, aborted))
        keep = []
        for m in msgs:
            pid, txn = _meta.get((topic, p, m.offset), (None, False))
            if not txn:
                keep.append(m)
                continue
            # the first marker of this producer after the record decides
            fate = next((a for (o, a) in sorted(ends.get(pid, [])) if o > m.offset), None)
            if fate is False:
                keep.append(m)
            elif fate is None:
                undecided += 1
        result[p] = [(m.offset, m.key, m.value, list(m.headers or [])) for m in keep]
    return result, undecided


if __name__ == "__main__":
    # One JSON object a line: {"partition", "offset", "key", "value"} (key and value as text).
    # With --settled, reads again (for up to 30 s) until no transaction is left without its
    # marker: a job that has just committed may not have its markers written yet.
    import json
    import time
    args = [a for a in sys.argv[1:] if a != "--settled"]
    deadline = time.time() + 30
    while True:
        res, undecided = committed(args[0], args[1])
        if undecided == 0 or "--settled" not in sys.argv or time.time() > deadline:
            break
        time.sleep(0.2)
    if undecided:
        print(f"kafka_committed: {undecided} records in transactions without a marker", file=sys.stderr)
    for p, rows in sorted(res.items()):
        for off, k, v, h in rows:
            text = lambda b: None if b is None else b.decode("utf-8", "replace")
            print(json.dumps({"partition": p, "offset": off, "key": text(k), "value": text(v)}))
