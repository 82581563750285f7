#!/usr/bin/env python3
"""Writes examples/data/transactions.jsonl: seeded card transactions for the velocity demo.
Most cards pay a few times an hour; a few have bursts of several payments within a minute."""
import json
import random

random.seed(11)
t0 = 1_763_942_400_000
cards = [f"4000-{n:04d}" for n in range(60)]
tx = []
for card in cards:
    t = t0 + random.randint(0, 600_000)
    for _ in range(random.randint(3, 12)):
        t += random.randint(90_000, 1_800_000)
        tx.append({"ts": t, "card": card, "amount": round(random.uniform(2, 400), 2), "merchant": random.choice(["grocer", "fuel", "online", "travel", "cafe"])})
for card in random.sample(cards, 6):
    start = t0 + random.randint(0, 3_600_000)
    for i in range(random.randint(4, 7)):
        tx.append({"ts": start + i * random.randint(3_000, 12_000), "card": card, "amount": round(random.uniform(50, 900), 2), "merchant": "online"})
tx.sort(key=lambda e: e["ts"] + random.uniform(0, 1500))  # arrival: up to 1.5 s out of order
with open("examples/data/transactions.jsonl", "w") as f:
    for e in tx:
        f.write(json.dumps(e, separators=(",", ":")) + "\n")
