"""Split scikit-learn's bundled 8x8 digits (1,797 images) into train and test sets."""

import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

print("# ccd progress=10 loading the digits")
digits = load_digits()
x_train, x_test, y_train, y_test = train_test_split(
    digits.data / 16.0, digits.target, test_size=0.3, random_state=0, stratify=digits.target
)
data = Path(os.environ["CCD_RUN_DIR"]) / "digits.npz"
np.savez_compressed(data, x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test)
print(f"# ccd progress=100 {len(x_train)} to train on, {len(x_test)} to test on")

with open(os.environ["CCD_OUTPUTS"], "a") as outputs:
    print(f"data={data}", file=outputs)
    print(f"train_size={len(x_train)}", file=outputs)
