"""The model, online: a published skops file -> a scorer for the risk core (docs/risk.md).

Models are gradient-boosted trees (LightGBM) over ``streams.risk.features.MODEL_FEATURES``,
written with skops (no pickle): loading refuses any type outside ``TRUSTED_TYPES``. One call
per payment gives the probability of fraud and each feature's contribution (LightGBM's
``pred_contrib``: SHAP values in log-odds, which add up to the raw score).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streams.risk.features import MODEL_FEATURES

# What a model file may contain; anything else is refused (skops checks it before loading).
TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]


class ModelError(ValueError):
    """A model file that cannot be used."""


def load_model(data: bytes) -> Any:
    """The classifier in a skops file; ModelError for anything else."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(data=data))
        unknown = sorted(untrusted - set(TRUSTED_TYPES))
        if unknown:
            raise ModelError(f"the model file holds types that are not trusted: {unknown}")
        model = sio.loads(data, trusted=sorted(untrusted))
    except ModelError:
        raise
    except Exception as exc:  # skops raises many kinds for a bad file
        raise ModelError(f"not a skops model file: {type(exc).__name__}: {exc}") from None
    n = getattr(model, "n_features_in_", None)
    if n != len(MODEL_FEATURES):
        raise ModelError(f"the model takes {n} features, not {len(MODEL_FEATURES)}")
    return model


class LightGbmScorer:
    """A loaded model, as the core's ``Scorer``."""

    def __init__(self, version: str, data: bytes) -> None:
        self.version = version
        self.model = load_model(data)
        self._booster = self.model.booster_

    def score(self, values: list[float]) -> tuple[float, list[tuple[str, float]]]:
        # One thread: OpenMP's team costs milliseconds per call for a single row (measured
        # 4.9 ms against 0.3 ms), and the numpy array skips LightGBM's list conversion.
        row = np.asarray([values], dtype=np.float64)
        contrib = self._booster.predict(row, pred_contrib=True, num_threads=1)[0]
        raw = float(sum(contrib))  # the last column is the expected value (the bias)
        p = 1.0 / (1.0 + math.exp(-raw)) if raw > -700 else 0.0
        named = [(MODEL_FEATURES[i], float(c)) for i, c in enumerate(contrib[:-1])]
        return p, named

    def predict(self, rows: list[list[float]]) -> list[float]:
        """Probabilities of fraud for many rows (training's comparisons)."""
        got = self.model.predict_proba(np.asarray(rows, dtype=np.float64), num_threads=1)
        return [float(x) for x in np.asarray(got)[:, 1]]
