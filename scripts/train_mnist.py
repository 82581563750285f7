"""Trains the classic MNIST CNN on data/mnist_train.csv and saves it as TorchScript.

Conv2D(32, 3x3, ReLU) -> MaxPool 2x2 -> Conv2D(64, 3x3, ReLU) -> MaxPool 2x2 -> Flatten -> Dense(10).
Input: float32 [N, 1, 28, 28], pixels scaled to 0..1. Output: logits [N, 10].

Seeded and deterministic: the same data gives the same model. Also writes
models/mnist_cnn.json: the accuracy on data/mnist_stream.csv and PyTorch's prediction for each
stream digit, which the tests compare with Rill's.

    .venv/bin/python scripts/train_mnist.py [--epochs 8] [--seed 0]
"""
import argparse
import json
import os
import time

import torch
from torch import nn


class MnistCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 5 * 5, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load(path):
    rows = [list(map(int, line.split(","))) for line in open(path) if line.strip()]
    t = torch.tensor(rows, dtype=torch.float32)
    return (t[:, :784] / 255.0).view(-1, 1, 28, 28), t[:, 784].long()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default="models/mnist_cnn.pt")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    x, y = load(os.path.join(args.data, "mnist_train.csv"))
    xs, ys = load(os.path.join(args.data, "mnist_stream.csv"))

    model = MnistCnn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"train_mnist: epoch {epoch + 1}/{args.epochs} loss {total / len(x):.4f}")

    model.eval()
    with torch.no_grad():
        predicted = model(xs).argmax(dim=1)
    accuracy = (predicted == ys).float().mean().item()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    torch.jit.script(model).save(args.out + ".tmp")
    os.replace(args.out + ".tmp", args.out)
    meta = {
        "model": args.out,
        "epochs": args.epochs,
        "seed": args.seed,
        "train_digits": len(x),
        "stream_digits": len(xs),
        "stream_accuracy": accuracy,
        "stream_predictions": predicted.tolist(),
        "train_seconds": round(time.time() - started, 1),
    }
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(meta, f)
    print(f"train_mnist: {args.out}: accuracy on the {len(xs)} stream digits {accuracy:.4f} "
          f"(trained in {meta['train_seconds']} s)")


if __name__ == "__main__":
    main()
