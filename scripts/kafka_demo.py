"""Writes 20,000 JSON card transactions to the `transactions` topic of a local broker (for
examples/kafka_fraud.yaml): python scripts/kafka_demo.py [BOOTSTRAP]. Needs aiokafka (in .venv)."""
import asyncio
import json
import random
import sys


async def main(bootstrap):
    from aiokafka import AIOKafkaProducer
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await p.start()
    rng = random.Random(7)
    try:
        for i in range(20_000):
            card = rng.randrange(50)
            amount = round(rng.expovariate(1 / 40), 2)
            msg = {"card": card, "amount": amount, "ts": 1_700_000_000_000 + i * 5}
            await p.send("transactions", json.dumps(msg).encode(), key=str(card).encode())
        await p.flush()
    finally:
        await p.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"))
