"""The Python consumers of the MNIST benchmark: read the CSV line by line, as a straightforward
service would, and call the TorchScript model with PyTorch, one record at a time (--batch 1) or
in batches of --batch records. Prints one JSON line: images/s and per-image latency p50/p99
(from reading the image's line to having its prediction).

    python benches/mnist_py.py MODEL CSV --batch 32 [--threads N]
"""
import argparse
import json
import os
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("csv")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))  # warm-up

    latencies = []
    n = 0
    started = time.perf_counter()
    with open(args.csv) as f, torch.no_grad():
        pending, read_at = [], []
        for line in f:
            if not line.strip():
                continue
            read_at.append(time.perf_counter())
            cells = line.rstrip("\n").split(",")
            pending.append([float(c) for c in cells[:784]])
            if len(pending) == args.batch:
                x = torch.tensor(pending, dtype=torch.float32).div_(255.0).view(-1, 1, 28, 28)
                model(x).argmax(dim=1).tolist()
                done = time.perf_counter()
                latencies += [done - t for t in read_at]
                n += len(pending)
                pending, read_at = [], []
        if pending:
            x = torch.tensor(pending, dtype=torch.float32).div_(255.0).view(-1, 1, 28, 28)
            model(x).argmax(dim=1).tolist()
            done = time.perf_counter()
            latencies += [done - t for t in read_at]
            n += len(pending)
    secs = time.perf_counter() - started
    latencies.sort()
    q = lambda p: latencies[min(len(latencies), max(1, int(-(-p * len(latencies) // 1)))) - 1] * 1000
    print(json.dumps({"images": n, "batch": args.batch, "threads": args.threads, "images_per_s": round(n / secs, 1),
                      "p50_ms": round(q(0.5), 3), "p99_ms": round(q(0.99), 3)}))


if __name__ == "__main__":
    main()
