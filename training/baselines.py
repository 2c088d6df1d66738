"""Classical baselines: per-descriptor logistic regression and a random forest on binned spectra.

They read the same inputs as the neural models (:class:`~speclake.training.encoding.BinSettings`
binned spectra, sparse) and predict the same kind of descriptors (a
:class:`~speclake.training.encoding.DescriptorSpace` fitted on training structures), and expose
``predict_descriptors(examples)`` like a loaded neural model, so the evaluation scores candidates
with them in exactly the same way. They are fitted on the train split inside the evaluation run;
the fit time is recorded.

* ``logreg``: one L2 logistic regression per descriptor (liblinear);
* ``random_forest``: one multi-output scikit-learn forest (each tree's leaves hold the frequency
  of every descriptor, so it is per-descriptor in its predictions while sharing the splits).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from .encoding import BinSettings, bin_batch_csr

log = logging.getLogger(__name__)

BaselineName = Literal["logreg", "random_forest"]
BASELINES: tuple[str, ...] = ("logreg", "random_forest")


class BaselineSettings(BaseModel):
    """Hyper-parameters of the classical baselines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    logreg_c: float = Field(1.0, gt=0, description="Inverse L2 strength of each logistic regression.")
    rf_trees: int = Field(100, ge=1)
    rf_min_samples_leaf: int = Field(1, ge=1)
    rf_max_features: str | float = Field("sqrt", description="Features tried per split (scikit-learn max_features).")
    n_jobs: int = Field(1, ge=1, description="Parallel jobs of the random forest.")
    seed: int = 0


def binned_matrix(examples: pa.Table, bins: BinSettings) -> Any:
    """scipy CSR matrix (n, n_bins) of the examples' binned spectra."""
    from scipy.sparse import csr_matrix

    indptr, indices, data = bin_batch_csr(examples.column("mz").to_pylist(),
                                          examples.column("intensities").to_pylist(), bins)
    return csr_matrix((data, indices, indptr), shape=(examples.num_rows, bins.n_bins))


@dataclass
class ClassicalModel:
    """A fitted baseline with the predictor interface of a loaded model."""

    model_id: str
    arch: str
    method: str
    descriptor_names: list[str]
    bins: BinSettings
    estimators: list[Any]          # logreg: one per descriptor (or a float for a constant column); rf: [forest]
    train_seconds: float
    n_train: int

    @property
    def train_spectra_per_s(self) -> float:
        return self.n_train / self.train_seconds if self.train_seconds > 0 else float("nan")

    def predict_descriptors(self, examples: pa.Table) -> np.ndarray:
        """(n, n_descriptors) probabilities."""
        x = binned_matrix(examples, self.bins)
        n, d = x.shape[0], len(self.descriptor_names)
        if self.method == "random_forest":
            probas = self.estimators[0].predict_proba(x)
            probas = probas if isinstance(probas, list) else [probas]
            classes = self.estimators[0].classes_
            classes = classes if isinstance(classes, list) else [classes]
            return np.stack([_positive_column(p, c) for p, c in zip(probas, classes)], axis=1).astype(np.float32)
        out = np.zeros((n, d), np.float32)
        for j, est in enumerate(self.estimators):
            out[:, j] = est if isinstance(est, float) else est.predict_proba(x)[:, 1]
        return out


def _positive_column(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """P(class 1) from a predict_proba block (0 or 1 when training saw one class only)."""
    hit = np.flatnonzero(np.asarray(classes) == 1)
    return proba[:, hit[0]] if len(hit) else np.zeros(len(proba))


def fit_baseline(name: str, train: pa.Table, targets: np.ndarray, descriptor_names: Sequence[str],
                 bins: BinSettings, settings: BaselineSettings = BaselineSettings()) -> ClassicalModel:
    """Fit baseline ``name`` on training examples and their (n, n_descriptors) 0/1 targets."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    y = np.asarray(targets, dtype=np.uint8)
    if y.shape != (train.num_rows, len(descriptor_names)):
        raise ValueError(f"targets {y.shape} do not match {train.num_rows} examples x {len(descriptor_names)} descriptors")
    t0 = time.perf_counter()
    x = binned_matrix(train, bins)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression

        estimators: list[Any] = []
        for j in range(y.shape[1]):
            col = y[:, j]
            if col.min() == col.max():
                estimators.append(float(col[0]))
                continue
            est = LogisticRegression(C=settings.logreg_c, solver="liblinear", max_iter=200)
            estimators.append(est.fit(x, col))
    else:
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(n_estimators=settings.rf_trees, min_samples_leaf=settings.rf_min_samples_leaf,
                                        max_features=settings.rf_max_features, n_jobs=settings.n_jobs,
                                        random_state=settings.seed)
        estimators = [forest.fit(x, y)]
    seconds = time.perf_counter() - t0
    log.info("fitted %s on %d spectra x %d descriptors in %.1f s", name, train.num_rows, y.shape[1], seconds)
    return ClassicalModel(f"classical:{name}", "classical", name, list(descriptor_names), bins, estimators,
                          seconds, train.num_rows)
