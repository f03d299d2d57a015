"""Train one model kind with one hyper-parameter value; write its test accuracy."""

import argparse
import os
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

MODELS = {
    "svm": lambda p: SVC(gamma=float(p)),
    "knn": lambda p: KNeighborsClassifier(n_neighbors=int(p)),
    "forest": lambda p: RandomForestClassifier(n_estimators=int(p), random_state=0),
    "logreg": lambda p: LogisticRegression(C=float(p), max_iter=500),
    "mlp": lambda p: MLPClassifier(hidden_layer_sizes=(int(p),), max_iter=300, random_state=0),
}

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--model", choices=sorted(MODELS), required=True)
parser.add_argument("--param", required=True)
args = parser.parse_args()

label = f"{args.model}({args.param})"
print(f"# ccd progress=10 {label}: loading")
data = np.load(args.data)
print(f"# ccd progress=30 {label}: fitting")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    model = MODELS[args.model](args.param).fit(data["x_train"], data["y_train"])
print(f"# ccd progress=80 {label}: testing")
predicted = model.predict(data["x_test"])
accuracy = float(np.mean(predicted == data["y_test"]))
predictions = Path(os.environ["CCD_RUN_DIR"]) / "predictions.npy"
np.save(predictions, predicted)
print(f"# ccd progress=100 {label}: accuracy {accuracy:.4f}")

with open(os.environ["CCD_OUTPUTS"], "a") as outputs:
    print(f"accuracy={accuracy:.4f}", file=outputs)
    print(f"label={label}", file=outputs)
    print(f"predictions={predictions}", file=outputs)
