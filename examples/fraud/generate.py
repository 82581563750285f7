"""Card transactions with a realistic fraud pattern, for examples/fraud/pipeline.yaml.

2,000 cards over 14 days. Each card has its own spending level and rhythm (a few transactions a
day, at home, at everyday merchants). About 3 % of cards are compromised once: from a random
moment, a burst of 4-14 transactions a minute or two apart, several times the card's usual
amount, mostly at electronics and gift-card merchants and often abroad — those are labelled
`is_fraud: true`. Deterministic (seeded); written as JSON lines sorted by time.

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
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
print(f"{out}: {len(rows)} transactions, {sum(r['is_fraud'] for r in rows)} fraudulent", file=sys.stderr)
