"""linear: a fitted standardized logistic regression as plain numbers, so a served model stores it as JSON.

scikit-learn fits it (a `StandardScaler` then a `LogisticRegression`/`LogisticRegressionCV`); `from_pipeline`
keeps its numbers, `probability` answers P(class 1) as scikit-learn's `predict_proba` does (the logistic of
the standardized inputs' linear score), and `as_dict`/`from_dict` write and read it without a pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class Linear:
    """P(class 1) = logistic(((x - mean) / scale) @ coef + intercept); a missing x (NaN) is `fill`."""

    fill: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def probability(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.coef):
            raise ValueError(
                f"the linear model reads {len(self.coef)} columns; got an array shaped {x.shape}"
            )
        x = np.where(np.isnan(x), self.fill[None, :], x)
        return expit((((x - self.mean) / self.scale) @ self.coef[:, None]).ravel() + self.intercept)

    def as_dict(self) -> dict:
        return {
            "fill": self.fill.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": float(self.intercept),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Linear:
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("fill", "mean", "scale", "coef")}
        if len({len(v) for v in arrays.values()}) != 1:
            raise ValueError("a stored linear model's fill, mean, scale and coef differ in length")
        return cls(**arrays, intercept=float(d["intercept"]))


def from_pipeline(pipeline) -> Linear:
    """The numbers of a fitted scikit-learn `make_pipeline(StandardScaler(), <binary logistic regression>)`;
    a missing input is filled with its training mean (it then adds nothing to the score)."""
    scaler, model = pipeline[0], pipeline[-1]
    coef = np.asarray(model.coef_, dtype=np.float64)
    if coef.shape[0] != 1:
        raise ValueError(
            f"a binary logistic regression has one row of coefficients; this one has {len(coef)}"
        )
    return Linear(
        fill=np.asarray(scaler.mean_, dtype=np.float64),
        mean=np.asarray(scaler.mean_, dtype=np.float64),
        scale=np.asarray(scaler.scale_, dtype=np.float64),
        coef=coef[0],
        intercept=float(np.asarray(model.intercept_).ravel()[0]),
    )
