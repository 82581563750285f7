"""River's LogisticRegression(SGD(0.1), intercept_lr=0.1) on the stream of benches/learn.yaml
(nine features and a label computed from `id`): records per second of predict + learn, the
stream built beforehand. With a second argument, writes the probabilities there, one a line."""
import sys
import time

from river import linear_model, optim

n = int(sys.argv[1])
rows = []
for i in range(n):
    x = {f"f{j}": ((i * (2 * j + 3) + j) % 11) / 10.0 for j in range(9)}
    rows.append((x, (i * 7 + i // 3) % 5 < 2))
model = linear_model.LogisticRegression(optimizer=optim.SGD(0.1), intercept_lr=0.1)
ps = []
start = time.perf_counter()
for x, y in rows:
    ps.append(model.predict_proba_one(x)[True])
    model.learn_one(x, y)
secs = time.perf_counter() - start
print(f"river n={n} secs={secs:.3f} rps={n / secs:.0f}")
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as f:
        f.write("".join(f"{p!r}\n" for p in ps))
