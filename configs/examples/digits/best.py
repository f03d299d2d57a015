"""Pick the most accurate model of the sweep: its arguments are JSON lists, one value per
member of the `train` matrix, in the same order."""

import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--accuracy", type=json.loads, required=True)
parser.add_argument("--label", type=json.loads, required=True)
parser.add_argument("--predictions", type=json.loads, required=True)
args = parser.parse_args()

rows = sorted(
    zip(map(float, args.accuracy), args.label, args.predictions, strict=True), reverse=True
)
for accuracy, label, _ in rows:
    print(f"{accuracy:.4f}  {label}")
accuracy, label, predictions = rows[0]
print(f"best: {label} at {accuracy:.4f}")

with open(os.environ["CCD_OUTPUTS"], "a") as outputs:
    print(f"label={label}", file=outputs)
    print(f"accuracy={accuracy:.4f}", file=outputs)
    print(f"predictions={predictions}", file=outputs)
    print(f"table={json.dumps([[a, name] for a, name, _ in rows])}", file=outputs)
