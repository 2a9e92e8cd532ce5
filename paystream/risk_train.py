"""Training the risk model (docs/risk.md, "The model"): ``paystream risk train``.

Labelled history comes from the warehouse: every live decision's features
(``risk_decisions``), labelled fraud by a reviewer's decline (``review_events``) or a fraud
label (``risk_labels``: the demo's planted fraud; chargebacks from reconciliation later),
legit otherwise (unlabelled payments are presumed legit, as in any fraud history). The split is by time:
the model learns on the earlier payments and is judged on the later ones (the last week when
the history spans two, else its last quarter), as it will be used. It is a LightGBM
gradient-boosted classifier over ``MODEL_FEATURES``, written with skops with its metrics
beside it: AUC, and precision and recall at the threshold that maximises F1 on the training
part. A model is published only if its AUC on the validation payments is no lower than the
live model's on the same payments.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.config import Settings
from streams.risk.features import MODEL_FEATURES, vector

DAY_US = 86_400 * 1_000_000
WEEK_US = 7 * DAY_US
VALIDATION_FRACTION = 0.25  # of the history, by time, when it spans less than two weeks
ROWS_MIN = 40  # labelled payments below which no model is trained
MODEL_PARAMS: dict[str, Any] = {
    "n_estimators": 150,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 5,
    "subsample": 0.9,
    "subsample_freq": 1,
    "colsample_bytree": 0.9,
    "random_state": 7,
    "n_jobs": 1,
    "verbose": -1,
}


class TrainingRefused(Exception):
    """Not enough history, one class only, or no warehouse to read."""


@dataclass(frozen=True, slots=True)
class Row:
    ts: int
    payment_id: str
    features: dict[str, Any]
    rules_score: float  # the live rule set's score, as decided (the rules-alone baseline)
    fraud: bool


def parse_since(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``3600s`` (or plain seconds) -> seconds."""
    m = re.fullmatch(r"(\d+)([smhd]?)", text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: use e.g. 30d, 12h, 90m, 3600s")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def split(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """Earlier rows to learn from, later rows to judge on (never the other way round)."""
    rows = sorted(rows, key=lambda r: (r.ts, r.payment_id))
    if not rows:
        return [], []
    if rows[-1].ts - rows[0].ts >= 2 * WEEK_US:
        cut = rows[-1].ts - WEEK_US
        return [r for r in rows if r.ts < cut], [r for r in rows if r.ts >= cut]
    k = int(len(rows) * (1 - VALIDATION_FRACTION))
    return rows[:k], rows[k:]


def auc(labels: list[bool], scores: list[float]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score([int(x) for x in labels], scores))


def train(rows: list[Row]) -> tuple[Any, dict[str, Any]]:
    """The fitted classifier and its metrics on the time-ordered validation part."""
    from lightgbm import LGBMClassifier
    from sklearn.metrics import precision_score, recall_score

    if len(rows) < ROWS_MIN:
        raise TrainingRefused(f"{len(rows)} labelled payments; at least {ROWS_MIN} are needed")
    learn, judge = split(rows)
    for part, name in ((learn, "training"), (judge, "validation")):
        kinds = {r.fraud for r in part}
        if kinds != {True, False}:
            raise TrainingRefused(
                f"the {name} part holds only {'fraud' if True in kinds else 'legit'} payments"
            )
    x_learn = [vector(r.features) for r in learn]
    y_learn = [int(r.fraud) for r in learn]
    model = LGBMClassifier(**MODEL_PARAMS)
    model.fit(x_learn, y_learn)
    p_learn = _proba(model, x_learn)
    threshold = _best_threshold(y_learn, p_learn)
    x_judge = [vector(r.features) for r in judge]
    y_judge = [int(r.fraud) for r in judge]
    p_judge = _proba(model, x_judge)
    flagged = [int(p >= threshold) for p in p_judge]
    metrics = {
        "auc": auc([bool(y) for y in y_judge], p_judge),
        "rules_auc": auc([bool(y) for y in y_judge], [r.rules_score for r in judge]),
        "threshold": threshold,
        "precision": float(precision_score(y_judge, flagged, zero_division=0)),
        "recall": float(recall_score(y_judge, flagged, zero_division=0)),
        "training_rows": len(learn),
        "validation_rows": len(judge),
        "validation_fraud": sum(y_judge),
        "training_from": learn[0].ts,
        "validation_from": judge[0].ts,
        "validation_to": judge[-1].ts,
        "features": list(MODEL_FEATURES),
        "params": MODEL_PARAMS,
    }
    return model, metrics


def _proba(model: Any, rows: list[list[float]]) -> list[float]:
    import numpy as np

    return [float(v) for v in np.asarray(model.predict_proba(rows))[:, 1]]


def _best_threshold(y: list[int], p: list[float]) -> float:
    best, best_f1 = 0.5, -1.0
    for t in sorted(set(round(x, 4) for x in p)):
        tp = sum(1 for yi, pi in zip(y, p, strict=True) if yi and pi >= t)
        fp = sum(1 for yi, pi in zip(y, p, strict=True) if not yi and pi >= t)
        fn = sum(1 for yi, pi in zip(y, p, strict=True) if yi and pi < t)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best, best_f1 = t, f1
    return best


def model_bytes(model: Any) -> bytes:
    import skops.io as sio

    data: bytes = sio.dumps(model)
    return data


# --- from the warehouse ---

DECISIONS_SQL = """
SELECT payment_id, toUnixTimestamp64Micro(ts) AS ts_us, features, toFloat64(score) AS score
FROM risk_decisions FINAL
WHERE mode = 'live' AND ts >= now64(6) - toIntervalSecond({since_s:UInt64})
ORDER BY ts, payment_id
"""
LABELS_SQL = "SELECT payment_id, label FROM risk_labels FINAL"
REVIEWS_SQL = """
SELECT payment_id, event FROM review_events FINAL
WHERE kind = 'risk' AND event IN ('approved', 'declined') AND payment_id IS NOT NULL
"""


def history(settings: Settings, since_s: int) -> list[Row]:
    from connectors.warehouse import query_client

    try:
        client = query_client(settings)
        decisions = client.query(DECISIONS_SQL, parameters={"since_s": since_s}).result_rows
        labels = client.query(LABELS_SQL).result_rows
        reviews = client.query(REVIEWS_SQL).result_rows
    except Exception as exc:  # clickhouse_connect raises many kinds
        raise TrainingRefused(
            f"the warehouse does not answer: {type(exc).__name__}: {exc}"
        ) from None
    # Any fraud label wins (a payment approved in review and charged back later is fraud).
    fraud = {p for p, label in labels if label == "fraud"}
    fraud |= {p for p, e in reviews if e == "declined"}
    return [
        Row(int(ts), payment_id, json.loads(features), float(score), payment_id in fraud)
        for payment_id, ts, features, score in decisions
    ]


def train_from_warehouse(
    settings: Settings, since_s: int, out: Path, publish: bool, force: bool
) -> dict[str, Any]:
    from paystream.risk_publish import content, live_model
    from paystream.risk_publish import publish as publish_version
    from streams.risk.model import ActivationKind
    from streams.risk.rules import sha256_of
    from streams.risk_scorer import LightGbmScorer

    rows = history(settings, since_s)
    model, metrics = train(rows)
    version = time.strftime("model-%Y%m%dT%H%M%SZ", time.gmtime())
    data = model_bytes(model)
    sha = sha256_of(data)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{version}.skops"
    path.write_bytes(data)
    live = live_model(settings)
    live_auc = None
    if live is not None:
        _, judge = split(rows)
        scorer = LightGbmScorer(live.version, content(settings, "model", live.sha256))
        live_auc = auc(
            [r.fraud for r in judge], scorer.predict([vector(r.features) for r in judge])
        )
    metrics["live_model"] = live.version if live is not None else None
    metrics["live_auc"] = live_auc
    metrics["sha256"] = sha
    (out / f"{version}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    worse = live_auc is not None and metrics["auc"] < live_auc
    published = False
    if not publish:
        note = "not published (--no-publish)"
    elif worse and not force:
        note = f"not published: AUC {metrics['auc']:.3f} < live {live_auc:.3f} on the same payments"
    else:
        publish_version(
            settings, ActivationKind.model, version, sha, data, json.dumps(metrics, default=str)
        )
        published, note = True, "published: it scores every payment from its log position on"
    return {
        "version": version, "file": str(path), "sha256": sha, "bytes": len(data),
        "metrics": metrics, "published": published, "published_note": note,
    }  # fmt: skip
