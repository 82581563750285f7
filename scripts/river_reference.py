"""River's online logistic regression on a JSON-lines file, as the reference for Rill's
`logistic_regression` transform: progressive validation (predict, then learn), one probability
per record on stdout.

    python scripts/river_reference.py FILE LABEL SETTINGS_JSON FEATURE...

SETTINGS_JSON has Rill's option names: {"optimizer": {"type": "sgd", "learning_rate": 0.1},
"intercept_learning_rate": 0.1, "l2": 0.0}. `--time` prints records per second to stderr
(reading and parsing the file is not timed)."""
import json
import sys
import time

from river import linear_model, optim

args = [a for a in sys.argv[1:] if a != "--time"]
path, label, settings, features = args[0], args[1], json.loads(args[2]), args[3:]
o = settings.get("optimizer", {"type": "sgd"})
kind = o.get("type", "sgd")
if kind == "sgd":
    optimizer = optim.SGD(o.get("learning_rate", 0.01))
elif kind == "ftrl":
    optimizer = optim.FTRLProximal(alpha=o.get("alpha", 0.05), beta=o.get("beta", 1.0), l1=o.get("l1", 0.0), l2=o.get("l2", 1.0))
elif kind == "adam":
    optimizer = optim.Adam(o.get("learning_rate", 0.1), beta_1=o.get("beta_1", 0.9), beta_2=o.get("beta_2", 0.999), eps=o.get("eps", 1e-8))
elif kind == "adagrad":
    optimizer = optim.AdaGrad(o.get("learning_rate", 0.1), eps=o.get("eps", 1e-8))
else:
    sys.exit(f"unknown optimizer {kind}")
model = linear_model.LogisticRegression(optimizer=optimizer, intercept_lr=settings.get("intercept_learning_rate", 0.01), l2=settings.get("l2", 0.0))

rows = []
with open(path) as f:
    for line in f:
        r = json.loads(line)
        rows.append(({k: r[k] for k in features}, r.get(label)))
start = time.perf_counter()
ps = []
for x, y in rows:
    ps.append(model.predict_proba_one(x)[True])
    if y is not None:
        model.learn_one(x, y)
elapsed = time.perf_counter() - start
if "--time" in sys.argv:
    print(f"river: {len(rows)} records in {elapsed:.3f} s = {len(rows) / elapsed:,.0f} records/s", file=sys.stderr)
else:
    sys.stdout.write("".join(f"{p!r}\n" for p in ps))
