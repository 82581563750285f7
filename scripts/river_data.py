"""Writes River's real data sets as JSON lines for Rill: data/phishing.jsonl (1,250 web pages,
River 0.26.1's `datasets.Phishing`; the label `is_phishing` is a bool)."""
import json
import os

from river import datasets

os.makedirs("data", exist_ok=True)
with open("data/phishing.jsonl", "w") as out:
    for x, y in datasets.Phishing():
        out.write(json.dumps({**x, "is_phishing": bool(y)}) + "\n")
