"""A failing submission: fit raises, so ramp-test writes error.txt and exits 1."""

from sklearn.base import BaseEstimator, ClassifierMixin


class Broken(ClassifierMixin, BaseEstimator):
    def fit(self, X, y):
        raise ValueError("error_in_fit: this submission fails on purpose")

    def predict_proba(self, X):
        raise AssertionError("never reached")


def get_estimator():
    return Broken()
