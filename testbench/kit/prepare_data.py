"""Write data/train.csv and data/test.csv from scikit-learn's bundled iris.

The data are generated rather than committed; the split is seeded so every
run (and every bench instance) sees the same rows. Usage:
``python prepare_data.py [KIT_OR_DATA_DIR]`` (default: this file's folder).
"""

import os
import sys

from sklearn.datasets import load_iris
from sklearn.model_selection import train_test_split


def prepare(root):
    iris = load_iris(as_frame=True)
    df = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    df["species"] = iris.target_names[df.pop("target").values]
    train, test = train_test_split(df, test_size=0.3, random_state=42, stratify=df["species"])
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    train.to_csv(os.path.join(root, "data", "train.csv"), index=False)
    test.to_csv(os.path.join(root, "data", "test.csv"), index=False)


if __name__ == "__main__":
    prepare(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
