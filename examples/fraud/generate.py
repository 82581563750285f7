"""Card transactions with a realistic fraud pattern, for examples/fraud/pipeline.yaml.

2,000 cards over 14 days. Each card has its own spending level and rhythm (a few transactions a
day, at home, at everyday merchants). About 3 % of cards are compromised once: from a random
moment, a burst of 4-14 transactions a minute or two apart, several times the card's usual
amount, mostly at electronics and gift-card merchants and often abroad — those are labelled
`is_fraud: true`. Deterministic (seeded); written as JSON lines sorted by time, each with a
`txn_id`. Next to them: `cards.jsonl` (a changelog of the cards' profiles) and
`chargebacks.jsonl` (labels arriving hours later), for examples/fraud/joins.yaml.

    python3 examples/fraud/generate.py [OUT]      # default data/fraud/transactions.jsonl
"""
import json
import math
import os
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "data/fraud/transactions.jsonl"
rng = random.Random(7)
start = 1_764_547_200_000  # 2025-12-01T00:00Z, ms
days = 14
everyday = ["grocer", "cafe", "fuel", "pharmacy", "restaurant", "transport", "books", "clothing"]
risky = ["electronics", "gift_cards"]
rows = []
for c in range(2000):
    card = f"4000-{c:04d}"
    level = math.exp(rng.gauss(3.3, 0.6))  # the card's typical amount, ~27
    per_day = rng.uniform(1.0, 6.0)
    t = start + rng.uniform(0, 86_400_000 / per_day)
    while t < start + days * 86_400_000:
        merchant = rng.choice(everyday) if rng.random() > 0.03 else rng.choice(risky)
        rows.append({"ts": int(t), "card": card, "amount": round(level * math.exp(rng.gauss(0, 0.5)), 2), "merchant": merchant, "foreign": rng.random() < 0.02, "is_fraud": False})
        t += rng.expovariate(per_day / 86_400_000)
    if rng.random() < 0.03:
        t = start + rng.uniform(1, days - 1) * 86_400_000
        for _ in range(rng.randint(4, 14)):
            merchant = rng.choice(risky) if rng.random() < 0.7 else rng.choice(everyday)
            rows.append({"ts": int(t), "card": card, "amount": round(level * rng.uniform(3, 12), 2), "merchant": merchant, "foreign": rng.random() < 0.6, "is_fraud": True})
            t += rng.uniform(20_000, 150_000)
rows.sort(key=lambda r: (r["ts"], r["card"]))
for i, r in enumerate(rows):
    r["txn_id"] = i
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
print(f"{out}: {len(rows)} transactions, {sum(r['is_fraud'] for r in rows)} fraudulent", file=sys.stderr)

# For examples/fraud/joins.yaml, from a generator of their own (the transactions above do not
# change): the cards' profiles as a changelog (opened a day before the first transaction; about
# a fifth get a new limit once; about 1 % are closed, with transactions after that), and
# chargebacks, which arrive 1-36 hours after the transaction: every fraudulent one, and about
# 0.3 % of the others (disputes).
side = random.Random(11)
folder = os.path.dirname(out) or "."
cards = []
for c in range(2000):
    card = f"4000-{c:04d}"
    limit = side.choice([500, 1000, 2000, 5000])
    cards.append({"ts": start - 86_400_000, "card": card, "limit": limit, "status": "open"})
    if side.random() < 0.2:
        cards.append({"ts": int(start + side.uniform(0, days) * 86_400_000), "card": card, "limit": limit * 2, "status": "open"})
    if side.random() < 0.01:
        cards.append({"ts": int(start + side.uniform(2, days - 2) * 86_400_000), "card": card, "limit": 0, "status": "closed"})
cards.sort(key=lambda r: (r["ts"], r["card"]))
with open(os.path.join(folder, "cards.jsonl"), "w") as f:
    for r in cards:
        f.write(json.dumps(r) + "\n")
chargebacks = []
for r in rows:
    if r["is_fraud"] or side.random() < 0.003:
        chargebacks.append({"ts": int(r["ts"] + side.uniform(1, 36) * 3_600_000), "txn_id": r["txn_id"], "reason": "fraud" if r["is_fraud"] else "dispute"})
chargebacks.sort(key=lambda r: (r["ts"], r["txn_id"]))
with open(os.path.join(folder, "chargebacks.jsonl"), "w") as f:
    for r in chargebacks:
        f.write(json.dumps(r) + "\n")
print(f"{folder}/cards.jsonl: {len(cards)} profile changes; {folder}/chargebacks.jsonl: {len(chargebacks)} chargebacks", file=sys.stderr)
