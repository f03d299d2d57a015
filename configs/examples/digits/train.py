"""Train one model kind with one hyper-parameter value; write its test accuracy."""

import argparse
import importlib
import os
import warnings
from pathlib import Path

import numpy as np

# kind -> (module, class, the hyper-parameter's keyword and type); imported only when used:
# importing all of scikit-learn's model families costs more than training most of these.
MODELS = {
    "svm": ("sklearn.svm", "SVC", "gamma", float, {}),
    "knn": ("sklearn.neighbors", "KNeighborsClassifier", "n_neighbors", int, {}),
    "forest": (
        "sklearn.ensemble",
        "RandomForestClassifier",
        "n_estimators",
        int,
        {"random_state": 0},
    ),
    "logreg": ("sklearn.linear_model", "LogisticRegression", "C", float, {"max_iter": 500}),
    "mlp": (
        "sklearn.neural_network",
        "MLPClassifier",
        "hidden_layer_sizes",
        lambda p: (int(p),),
        {"max_iter": 200, "random_state": 0},
    ),
}


def make_model(kind: str, param: str):
    module, name, keyword, convert, fixed = MODELS[kind]
    return getattr(importlib.import_module(module), name)(**{keyword: convert(param)}, **fixed)


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
    warnings.simplefilter("ignore")  # an MLP that has not fully converged is fine here
    model = make_model(args.model, args.param).fit(data["x_train"], data["y_train"])
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
