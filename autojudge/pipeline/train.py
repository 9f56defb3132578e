"""Training the judge (docs/design.md §1.3): prompt-level split, classifier, validation threshold table.

- Split: whole prompts go to train or validation (`dataset.split_by_prompt`).
- `logreg` (reference): StandardScaler + logistic regression; C is chosen from a grid
  by validation ROC AUC. `lightgbm`: gradient-boosted trees, the number of rounds
  chosen by early stopping on validation ROC AUC.
- Class imbalance: with `class_weight="balanced"` both classes weigh the same in the
  loss, so the outputs are ranking scores more than calibrated probabilities; the
  threshold table below is what maps them to behaviour.
- Threshold table (validation): for each tau, recall of important = share of important
  mismatches with p >= tau (rejected, as they must be), acceptance rate = share of all
  mismatches with p < tau (accepted by the judge).
- Default threshold: the largest tau whose validation recall of important mismatches
  is at least `recall_target`. `autojudge run` later replaces it with the threshold
  that decoding evaluation recommends (at most ~1 point of accuracy loss).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from autojudge.pipeline.dataset import FEATURE_SETUPS, MinedData, check_trainable, split_by_prompt
from autojudge.judge import Judge, PairInfo
from autojudge.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_TAUS: tuple[float, ...] = tuple(
    sorted({0.001, 0.002, 0.005, *[round(i / 100, 2) for i in range(1, 100)], 0.995, 0.998, 0.999})
)


@dataclass
class TrainConfig:
    """Settings of `train_judge`."""

    model: str = "logreg"
    """Classifier: "logreg" (StandardScaler + logistic regression) or "lightgbm"."""
    feature_setup: str = "DD-DT"
    """Features: "DT" = target hidden state; "DD-DT" = [draft hidden ; target hidden]."""
    val_fraction: float = 0.2
    """Share of prompts (not rows) held out for validation."""
    seed: int = 0
    """Seed of the prompt split and of the classifiers."""
    c_grid: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    """Inverse regularisation strengths tried for logreg; the best validation ROC AUC wins."""
    class_weight: str | None = "balanced"
    """"balanced" weighs both classes equally (important mismatches are the minority); None = raw counts."""
    max_iter: int = 3000
    """Iteration cap of the logistic regression solver."""
    lightgbm_rounds: int = 600
    """Maximum boosting rounds for lightgbm (early stopping on validation AUC picks fewer)."""
    lightgbm_leaves: int = 15
    """Leaves per tree for lightgbm."""
    lightgbm_learning_rate: float = 0.05
    """Shrinkage of lightgbm."""
    recall_target: float = 0.95
    """Default threshold: largest tau keeping validation recall of important mismatches >= this."""
    num_threads: int = 1
    """CPU threads for the classifiers (the machine is shared)."""
    taus: tuple[float, ...] = field(default=DEFAULT_TAUS)
    """Thresholds of the validation table."""

    def validate(self) -> None:
        if self.model not in ("logreg", "lightgbm"):
            raise InputError(f"unknown judge model {self.model!r}; choose logreg or lightgbm")
        if self.feature_setup not in FEATURE_SETUPS:
            raise InputError(f"unknown feature setup {self.feature_setup!r}; choose from {', '.join(FEATURE_SETUPS)}")
        if not 0.0 < self.recall_target <= 1.0:
            raise InputError(f"recall target must be in (0, 1], got {self.recall_target}")
        if self.class_weight not in (None, "balanced"):
            raise InputError(f"class weight must be 'balanced' or None, got {self.class_weight!r}")


def threshold_table(probs: np.ndarray, important: np.ndarray, taus: tuple[float, ...]) -> list[dict[str, float]]:
    """Per tau: recall of important (p >= tau), acceptance rate (p < tau) and what accepting costs."""
    important = important.astype(bool)
    num, num_important = len(probs), int(important.sum())
    rows = []
    for tau in taus:
        accepted = probs < tau
        rows.append({
            "tau": float(tau),
            "recall_important": float((~accepted & important).sum() / max(num_important, 1)),
            "acceptance_rate": float(accepted.sum() / max(num, 1)),
            "accepted_unimportant_rate": float((accepted & ~important).sum() / max(num - num_important, 1)),
            "accepted_important_share": float((accepted & important).sum() / max(num, 1)),
        })
    return rows


def pick_threshold(table: list[dict[str, float]], recall_target: float) -> float:
    """Largest tau with recall of important >= recall_target (0.0, i.e. lossless, if none)."""
    ok = [row["tau"] for row in table if row["recall_important"] >= recall_target]
    return max(ok) if ok else 0.0


def _sample_weights(labels: np.ndarray, class_weight: str | None) -> np.ndarray:
    """Per-row weights that balance the classes (or ones)."""
    if class_weight is None:
        return np.ones(len(labels), dtype=np.float64)
    positives = max(int(labels.sum()), 1)
    negatives = max(len(labels) - positives, 1)
    return np.where(labels, len(labels) / (2.0 * positives), len(labels) / (2.0 * negatives))


def fit_logreg(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, config: TrainConfig, pair: PairInfo
) -> tuple[Judge, dict[str, Any]]:
    """StandardScaler + logistic regression, C chosen by validation ROC AUC."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    scale = scaler.scale_.astype(np.float32)
    scale[scale == 0] = 1.0  # constant features: leave them centred, unscaled
    train_scaled = (x_train - scaler.mean_) / scale
    val_scaled = (x_val - scaler.mean_) / scale
    grid: list[dict[str, float]] = []
    best: tuple[float, Any] | None = None
    for c in config.c_grid:
        model = LogisticRegression(
            C=c, class_weight=config.class_weight, max_iter=config.max_iter, random_state=config.seed
        )
        model.fit(train_scaled, y_train)
        auc = float(roc_auc_score(y_val, model.decision_function(val_scaled)))
        grid.append({"C": float(c), "val_roc_auc": auc})
        log.info("logreg C=%g: validation ROC AUC %.4f", c, auc)
        if best is None or auc > best[0]:
            best = (auc, model)
    assert best is not None
    model = best[1]
    judge = Judge(
        "logreg", config.feature_setup, pair,
        scaler_mean=scaler.mean_.astype(np.float32), scaler_scale=scale,
        coef=model.coef_[0].astype(np.float32), intercept=float(model.intercept_[0]),
    )
    return judge, {"c_grid": grid, "chosen_C": float(model.C)}


def fit_lightgbm(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, config: TrainConfig, pair: PairInfo
) -> tuple[Judge, dict[str, Any]]:
    """LightGBM with early stopping on validation ROC AUC; saved as its text model."""
    import lightgbm

    params = {
        "objective": "binary",
        "metric": "auc",
        "learning_rate": config.lightgbm_learning_rate,
        "num_leaves": config.lightgbm_leaves,
        "min_data_in_leaf": 10,
        "feature_fraction": 0.5,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": config.num_threads,
        "verbosity": -1,
    }
    train_set = lightgbm.Dataset(x_train, y_train.astype(int), weight=_sample_weights(y_train, config.class_weight))
    val_set = lightgbm.Dataset(x_val, y_val.astype(int), reference=train_set)
    booster = lightgbm.train(
        params, train_set, num_boost_round=config.lightgbm_rounds, valid_sets=[val_set],
        callbacks=[lightgbm.early_stopping(50, verbose=False)],
    )
    rounds = int(booster.best_iteration or config.lightgbm_rounds)
    judge = Judge("lightgbm", config.feature_setup, pair, booster_text=booster.model_to_string(num_iteration=rounds))
    return judge, {"rounds": rounds, "params": params}


def train_judge(data: MinedData, config: TrainConfig | None = None) -> Judge:
    """Split by prompt, fit the classifier, and attach validation metrics and thresholds to the judge."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    config = config or TrainConfig()
    config.validate()
    check_trainable(data)
    pair = PairInfo.from_manifest(data.manifest)
    if data.h_target.shape[1] != pair.target_hidden_size or data.h_draft.shape[1] != pair.draft_hidden_size:
        raise InputError(
            f"features have widths {data.h_target.shape[1]} (target) / {data.h_draft.shape[1]} (draft) but the "
            f"manifest says {pair.target_hidden_size} / {pair.draft_hidden_size}"
        )
    train_mask, val_mask = split_by_prompt(data.prompt_ids, data.important, config.val_fraction, config.seed)
    train, val = data.subset(train_mask), data.subset(val_mask)
    x_train, x_val = train.features(config.feature_setup), val.features(config.feature_setup)
    fit = fit_logreg if config.model == "logreg" else fit_lightgbm
    judge, fit_info = fit(x_train, train.important, x_val, val.important, config, pair)

    val_probs = judge.predict_features(x_val)
    train_probs = judge.predict_features(x_train)
    table = threshold_table(val_probs, val.important, config.taus)
    default_tau = pick_threshold(table, config.recall_target)
    judge.thresholds = table
    judge.set_default_threshold(default_tau, f"validation recall of important >= {config.recall_target}")
    judge.metrics = {
        "val_roc_auc": float(roc_auc_score(val.important, val_probs)),
        "val_pr_auc": float(average_precision_score(val.important, val_probs)),
        "val_important_rate": float(val.important.mean()),
        "train_roc_auc": float(roc_auc_score(train.important, train_probs)),
        "num_train": int(len(train)),
        "num_val": int(len(val)),
        "num_train_prompts": int(len(set(train.prompt_ids.tolist()))),
        "num_val_prompts": int(len(set(val.prompt_ids.tolist()))),
        "num_important": int(data.important.sum()),
        **fit_info,
    }
    judge.settings = {key: value for key, value in asdict(config).items() if key != "taus"}
    judge.settings["data_fingerprint"] = data.fingerprint()  # the labels it was trained on
    return judge


def format_report(judge: Judge, every: float = 0.05) -> str:
    """A Markdown summary of a trained judge: data, validation AUCs, and the threshold table."""
    m = judge.metrics
    lines = [
        f"# Judge ({judge.kind}, {judge.feature_setup})",
        "",
        f"- pair: target `{judge.pair.target_id}` (hidden {judge.pair.target_hidden_size}), "
        f"draft `{judge.pair.draft_id}` (hidden {judge.pair.draft_hidden_size})",
        f"- data: {m['num_train']} train mismatches from {m['num_train_prompts']} prompts, "
        f"{m['num_val']} validation mismatches from {m['num_val_prompts']} prompts (split by prompt); "
        f"{m['num_important']} important overall",
        f"- validation ROC AUC **{m['val_roc_auc']:.4f}**, PR AUC {m['val_pr_auc']:.4f} "
        f"(chance = important rate {m['val_important_rate']:.3f}); train ROC AUC {m['train_roc_auc']:.4f}",
    ]
    if "chosen_C" in m:
        grid = ", ".join(f"C={row['C']:g}: {row['val_roc_auc']:.4f}" for row in m["c_grid"])
        lines.append(f"- C = {m['chosen_C']:g} chosen by validation ROC AUC ({grid})")
    if "rounds" in m:
        lines.append(f"- {m['rounds']} boosting rounds (early stopping on validation ROC AUC)")
    lines += [
        f"- default threshold tau = {judge.default_threshold:.3f} ({judge.threshold_source})",
        "",
        "Accept a mismatched draft token when p(important) < tau.",
        "",
        "| tau | recall of important | acceptance rate of mismatches | unimportant accepted |",
        "|---:|---:|---:|---:|",
    ]
    shown = [row for row in judge.thresholds if abs(row["tau"] / every - round(row["tau"] / every)) < 1e-9]
    for row in shown:
        lines.append(
            f"| {row['tau']:.2f} | {row['recall_important']:.3f} | {row['acceptance_rate']:.3f} | "
            f"{row['accepted_unimportant_rate']:.3f} |"
        )
    return "\n".join(lines) + "\n"
