"""The judge artifact: a trained p(important | hidden states) classifier, saved without pickle.

A judge folder holds
- `judge.json`: format version, classifier kind, feature setup, the model pair it was
  trained for (target/draft ids, hidden sizes, tokenizer fingerprint), the validation
  threshold table, the default threshold and training metrics;
- `weights.safetensors` (logistic regression: scaler mean/scale, coefficients,
  intercept) or `model.txt` (LightGBM's own text model).

At decode time the judge is called on the hidden states the verification pass already
has: `judge(h_target [n, Ht], h_draft [n, Hd]) -> p [n]` (torch in, torch out); the
acceptance rule accepts a mismatch when p < tau (docs/design.md §1.4).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autojudge.models import ModelPairError, resolve_spec
from autojudge.judge_format import (  # noqa: F401 - re-exported: the format lives there
    FEATURE_SETUPS, FORMAT_VERSION, JSON_NAME, KINDS, LIGHTGBM_NAME, WEIGHTS_NAME, JudgeFiles, JudgeFormatError,
    load_logreg_weights, num_features, parse_lightgbm, read_judge_folder, read_judge_meta,
)
from autojudge.errors import InputError


def build_features(h_target: np.ndarray, h_draft: np.ndarray, feature_setup: str) -> np.ndarray:
    """[n, F] features from hidden states (docs/design.md §1.2); same layout as the judge at decode time."""
    if feature_setup == "DT":
        return np.asarray(h_target, dtype=np.float32)
    if feature_setup == "DD-DT":
        return np.concatenate([h_draft, h_target], axis=1).astype(np.float32, copy=False)
    raise InputError(f"unknown feature setup {feature_setup!r}; choose from {', '.join(FEATURE_SETUPS)}")


@dataclass
class PairInfo:
    """The model pair a judge was trained for (from the mining manifest)."""

    target_id: str
    """Spec of the target model (e.g. `toy:target`, a folder, a hub id)."""
    draft_id: str
    """Spec of the draft model."""
    tokenizer_fingerprint: str
    """`autojudge.models.tokenizer_fingerprint` of the shared tokenizer."""
    target_hidden_size: int
    """Width of the target's last hidden state (h_target)."""
    draft_hidden_size: int
    """Width of the draft's last hidden state (h_draft)."""

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "PairInfo":
        """The pair recorded in a mining folder's manifest.json."""
        keys = ("target", "draft", "tokenizer_fingerprint", "target_hidden_size", "draft_hidden_size")
        missing = [key for key in keys if manifest.get(key) is None]
        if missing:
            raise InputError(f"mining manifest lacks {', '.join(missing)}: cannot tell which model pair the judge is for")
        return cls(
            str(manifest["target"]), str(manifest["draft"]), str(manifest["tokenizer_fingerprint"]),
            int(manifest["target_hidden_size"]), int(manifest["draft_hidden_size"]),
        )


def _same_model(trained: str, given: str) -> bool:
    """Model specs name the same model: equal strings, or the same local folder."""
    if trained == given:
        return True
    try:
        trained_path, trained_file = resolve_spec(trained)
        given_path, given_file = resolve_spec(given)
    except ModelPairError:
        return False
    if trained_file != given_file or not (Path(trained_path).exists() and Path(given_path).exists()):
        return False
    return Path(trained_path).resolve() == Path(given_path).resolve()


class Judge:
    """A trained judge: features from hidden states -> probability that a mismatch is important."""

    def __init__(
        self,
        kind: str,
        feature_setup: str,
        pair: PairInfo,
        *,
        scaler_mean: np.ndarray | None = None,
        scaler_scale: np.ndarray | None = None,
        coef: np.ndarray | None = None,
        intercept: float = 0.0,
        booster_text: str | None = None,
        thresholds: list[dict[str, float]] | None = None,
        default_threshold: float = 0.5,
        threshold_source: str = "default",
        default_window: int | None = None,
        metrics: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise JudgeFormatError(f"unknown judge kind {kind!r}; expected one of {', '.join(KINDS)}")
        if feature_setup not in FEATURE_SETUPS:
            raise JudgeFormatError(f"unknown feature setup {feature_setup!r}; expected one of {', '.join(FEATURE_SETUPS)}")
        self.kind = kind
        self.feature_setup = feature_setup
        self.pair = pair
        self.scaler_mean = None if scaler_mean is None else np.asarray(scaler_mean, dtype=np.float32)
        self.scaler_scale = None if scaler_scale is None else np.asarray(scaler_scale, dtype=np.float32)
        self.coef = None if coef is None else np.asarray(coef, dtype=np.float32)
        self.intercept = float(intercept)
        self.booster_text = booster_text
        self.thresholds = thresholds or []
        self.default_threshold = float(default_threshold)
        self.threshold_source = threshold_source
        self.default_window = default_window  # window the default threshold was chosen at (None: not chosen by decoding)
        self.metrics = metrics or {}
        self.settings = settings or {}
        self._booster: Any = None
        self._torch_params: dict[tuple[str, torch.device], torch.Tensor] = {}
        if kind == "logreg" and (self.coef is None or self.scaler_mean is None or self.scaler_scale is None):
            raise JudgeFormatError("a logreg judge needs scaler_mean, scaler_scale and coef")
        if kind == "lightgbm" and not booster_text:
            raise JudgeFormatError("a lightgbm judge needs its booster text model")

    # ----------------------------------------------------------------- shapes
    @property
    def num_features(self) -> int:
        """F: the width of the feature vector the classifier expects."""
        if self.feature_setup == "DT":
            return self.pair.target_hidden_size
        return self.pair.draft_hidden_size + self.pair.target_hidden_size

    def _check_widths(self, target_width: int, draft_width: int | None) -> None:
        if target_width != self.pair.target_hidden_size:
            raise ModelPairError(
                f"judge expects target hidden states of width {self.pair.target_hidden_size} "
                f"(trained for {self.pair.target_id!r}), got {target_width}"
            )
        if self.feature_setup == "DD-DT" and draft_width != self.pair.draft_hidden_size:
            raise ModelPairError(
                f"judge ({self.feature_setup}) expects draft hidden states of width {self.pair.draft_hidden_size} "
                f"(trained for {self.pair.draft_id!r}), got {draft_width}"
            )

    # -------------------------------------------------------------- inference
    def __call__(self, h_target: torch.Tensor, h_draft: torch.Tensor | None = None) -> torch.Tensor:
        """p(important) [n] for hidden states h_target [n, Ht] and h_draft [n, Hd] (float32, input device)."""
        self._check_widths(h_target.shape[-1], None if h_draft is None else h_draft.shape[-1])
        if self.feature_setup == "DT":
            features = h_target.float()  # [n, Ht]
        else:
            assert h_draft is not None
            features = torch.cat([h_draft.float(), h_target.float()], dim=-1)  # [n, Hd + Ht]
        if self.kind == "lightgbm":
            probs = self.predict_features(features.detach().cpu().numpy())
            return torch.from_numpy(probs).to(h_target.device)
        mean, scale, coef = (self._param(name, features.device) for name in ("scaler_mean", "scaler_scale", "coef"))
        logits = ((features - mean) / scale) @ coef + self.intercept  # [n]
        return torch.sigmoid(logits)

    def _param(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._torch_params:
            self._torch_params[key] = torch.from_numpy(getattr(self, name)).to(device)
        return self._torch_params[key]

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """p(important) [n] float32 for a feature matrix [n, F] built by `build_features`."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ModelPairError(f"judge expects features of shape [n, {self.num_features}], got {list(features.shape)}")
        if self.kind == "lightgbm":
            return np.asarray(self.booster.predict(features), dtype=np.float32)
        assert self.coef is not None and self.scaler_mean is not None and self.scaler_scale is not None
        logits = ((features - self.scaler_mean) / self.scaler_scale) @ self.coef + self.intercept
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

    def predict_hidden(self, h_target: np.ndarray, h_draft: np.ndarray) -> np.ndarray:
        """p(important) [n] from numpy hidden states (same layout as decode time)."""
        return self.predict_features(build_features(h_target, h_draft, self.feature_setup))

    @property
    def booster(self) -> Any:
        """The LightGBM booster, rebuilt from its text model on first use."""
        if self._booster is None:
            import lightgbm

            self._booster = lightgbm.Booster(model_str=self.booster_text)
        return self._booster

    # ------------------------------------------------------------ pair checks
    def check_pair(
        self, target_id: str, draft_id: str, tokenizer_fingerprint: str, target_hidden: int, draft_hidden: int,
        same_pair: bool = False,
    ) -> None:
        """Raise ModelPairError naming every difference between this judge's pair and the given one.
        `same_pair`: the user declares that the specs name the judge's models (e.g. identical copies at
        other paths, `--same-pair`), so the names are not compared; everything else still is."""
        problems = []
        if not same_pair and not _same_model(self.pair.target_id, target_id):
            problems.append(f"target model {target_id!r} (judge trained for {self.pair.target_id!r})")
        if not same_pair and not _same_model(self.pair.draft_id, draft_id):
            problems.append(f"draft model {draft_id!r} (judge trained for {self.pair.draft_id!r})")
        names_differ = len(problems)
        if tokenizer_fingerprint != self.pair.tokenizer_fingerprint:
            problems.append(
                f"tokenizer fingerprint {tokenizer_fingerprint} (judge trained for {self.pair.tokenizer_fingerprint})"
            )
        if int(target_hidden) != self.pair.target_hidden_size:
            problems.append(f"target hidden size {target_hidden} (judge expects {self.pair.target_hidden_size})")
        if int(draft_hidden) != self.pair.draft_hidden_size:
            problems.append(f"draft hidden size {draft_hidden} (judge expects {self.pair.draft_hidden_size})")
        if problems:
            names_only = names_differ == len(problems)  # the facts agree: maybe copies at other paths
            raise ModelPairError(
                "this judge does not fit the model pair: " + "; ".join(problems)
                + ". A judge only works with the pair it was mined and trained on: run `autojudge mine` and "
                "`autojudge train` for this pair"
                + (" (or, when these are identical copies of the judge's models, pass --same-pair)." if names_only else ".")
            )

    def check_model_pair(self, pair: Any, same_pair: bool = False) -> None:
        """`check_pair` for a loaded `autojudge.models.ModelPair`."""
        from autojudge.models import tokenizer_fingerprint

        self.check_pair(
            pair.target_id, pair.draft_id, tokenizer_fingerprint(pair.tokenizer),
            hidden_size(pair.target), hidden_size(pair.draft), same_pair=same_pair,
        )

    def fingerprint(self) -> str:
        """A short hash of what decides the judge's outputs (kind, features, pair, weights): decodes
        stored with it are reused only while it is unchanged (not its default threshold or window)."""
        import hashlib

        digest = hashlib.sha256(json.dumps([self.kind, self.feature_setup, asdict(self.pair), self.intercept]).encode())
        for array in (self.scaler_mean, self.scaler_scale, self.coef):
            digest.update(b"-" if array is None else array.tobytes())
        digest.update((self.booster_text or "").encode())
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------ thresholds
    def set_default_threshold(self, tau: float, source: str, window: int | None = None) -> None:
        """Replace the default threshold (e.g. with the one evaluation recommends); `source` says why,
        `window` is the decoding window it was chosen at (decode/infer/eval use it when not told one)."""
        if not 0.0 <= tau <= 1.0:
            raise InputError(f"threshold must be in [0, 1], got {tau}")
        if window is not None and window < 1:
            raise InputError(f"window must be >= 1, got {window}")
        self.default_threshold = float(tau)
        self.threshold_source = source
        self.default_window = window

    # -------------------------------------------------------------- save/load
    def to_json(self) -> dict[str, Any]:
        """The judge.json payload (everything but the weights)."""
        return {
            "format": "autojudge-judge",
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "feature_setup": self.feature_setup,
            "num_features": self.num_features,
            "pair": asdict(self.pair),
            "intercept": self.intercept,
            "default_threshold": self.default_threshold,
            "threshold_source": self.threshold_source,
            "default_window": self.default_window,
            "acceptance": "accept a mismatched draft token when p(important) < threshold",
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "settings": self.settings,
            "weights_file": WEIGHTS_NAME if self.kind == "logreg" else LIGHTGBM_NAME,
        }

    def save(self, folder: str | Path) -> Path:
        """Write judge.json plus weights.safetensors or model.txt into `folder`; return the folder.

        Atomic: both files are written under temporary names first (`files.atomic_path`); judge.json,
        the mark of a complete judge, is removed just before changed weights are renamed in and renamed
        in last. A kill or a full disk leaves the old judge, the new one, or a folder without judge.json
        ("not a judge folder"), never the old judge.json with new weights; a folder this call created is
        removed again when it fails."""
        from safetensors.numpy import save as safetensors_bytes

        from autojudge.files import atomic_path

        folder = Path(folder)
        if self.kind == "logreg":
            assert self.coef is not None and self.scaler_mean is not None and self.scaler_scale is not None
            weights_path = folder / WEIGHTS_NAME
            weights = safetensors_bytes(
                {"scaler_mean": self.scaler_mean, "scaler_scale": self.scaler_scale, "coef": self.coef},
                metadata={"format": "autojudge-judge", "feature_setup": self.feature_setup},
            )
        else:
            assert self.booster_text is not None
            weights_path, weights = folder / LIGHTGBM_NAME, self.booster_text.encode("utf-8")
        meta_path = folder / JSON_NAME
        created = not folder.exists()
        try:
            with atomic_path(meta_path) as meta_temporary:
                meta_temporary.write_text(json.dumps(self.to_json(), indent=2), encoding="utf-8")
                if not _holds_weights(weights_path, weights):  # a re-save with new thresholds renames judge.json only
                    with atomic_path(weights_path, before_replace=lambda: meta_path.unlink(missing_ok=True)) as temporary:
                        temporary.write_bytes(weights)
        except BaseException:
            if created:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Judge":
        """Read a judge folder written by `save`; every field and tensor is checked (JudgeFormatError)."""
        return cls.from_files(read_judge_folder(folder))

    @classmethod
    def from_files(cls, files: JudgeFiles) -> "Judge":
        """The judge of a folder already read and checked (`judge_format.read_judge_folder`), without reading it again."""
        meta = files.meta
        pair = PairInfo(**meta["pair"])
        common = dict(
            pair=pair,
            thresholds=meta.get("thresholds", []),
            default_threshold=meta["default_threshold"],
            threshold_source=meta.get("threshold_source", "default"),
            default_window=meta.get("default_window"),
            metrics=meta.get("metrics", {}),
            settings=meta.get("settings", {}),
        )
        if meta["kind"] == "logreg":
            tensors = files.tensors
            assert tensors is not None
            return cls(
                "logreg", meta["feature_setup"], scaler_mean=tensors["scaler_mean"], scaler_scale=tensors["scaler_scale"],
                coef=tensors["coef"], intercept=meta["intercept"], **common,
            )
        return cls(meta["kind"], meta["feature_setup"], booster_text=files.booster_text, **common)

    def __repr__(self) -> str:
        auc = self.metrics.get("val_roc_auc")
        return (
            f"Judge(kind={self.kind!r}, feature_setup={self.feature_setup!r}, target={self.pair.target_id!r}, "
            f"draft={self.pair.draft_id!r}, default_threshold={self.default_threshold:.3f}, val_roc_auc={auc})"
        )


def _holds_weights(path: Path, data: bytes) -> bool:
    """`path` already holds the weights file `data`: the same bytes, or for safetensors the same header
    (parsed: its metadata's key order changes from one write to the next) and the same tensor bytes."""
    def parts(blob: bytes) -> tuple[Any, bytes]:
        size = int.from_bytes(blob[:8], "little")
        return json.loads(blob[8 : 8 + size]), blob[8 + size :]

    try:
        if not path.is_file():
            return False
        existing = path.read_bytes()
        return existing == data or (path.name == WEIGHTS_NAME and parts(existing) == parts(data))
    except (OSError, ValueError):
        return False


def hidden_size(model: Any) -> int:
    """Width of a transformers model's last hidden state."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return int(config.hidden_size)
