#!/usr/bin/env python3
"""Writes examples/data/events.jsonl: a seeded sample of keyed events for the windows demo.

Events arrive out of order by up to 200 ms (within the pipeline's max_out_of_orderness); a few
arrive much later: some within the 500 ms allowed lateness after their window fired (they update
it), some beyond it (they go to the late output).
"""
import json
import random

random.seed(42)
t0 = 1_763_942_400_000  # 2025-11-24T00:00:00Z
keys = ["sensor-a", "sensor-b", "sensor-c", "sensor-d"]
events = []
t = t0
for i in range(600):
    t += random.randint(5, 25)
    events.append({"ts": t, "key": random.choice(keys), "value": round(random.uniform(0, 100), 2)})

# Arrival order: jitter each event by up to 200 ms (sorting by ts + jitter).
arrival = sorted(events, key=lambda e: e["ts"] + random.uniform(0, 199))
# A few stragglers: moved much later in the file than their time.
late = []
for _ in range(8):
    e = arrival.pop(random.randrange(50, len(arrival) - 200))
    late.append(e)
for e in late:
    # Re-insert 1.0-2.2 s of event time after the event's own time.
    delay = random.uniform(1000, 2200)
    pos = next(i for i, x in enumerate(arrival) if x["ts"] > e["ts"] + delay)
    arrival.insert(pos, e)

with open("examples/data/events.jsonl", "w") as f:
    for e in arrival:
        f.write(json.dumps(e, separators=(",", ":")) + "\n")
