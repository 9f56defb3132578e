"""The judge folder's format, checked without torch: `judge.json` fields and the weight tensors.

`read_judge_meta(folder)` reads judge.json and checks every field's type and range
(format version, kind, feature setup, the model pair's facts, a default threshold in
[0, 1], a default window >= 1 or null, known keys only); `load_logreg_weights` checks
that the three tensors exist and are finite float vectors of the stated feature count.
`read_judge_folder` does both (and parses a LightGBM model) and keeps what it read, so a command
can refuse a broken judge before it imports torch or loads a model and build the `Judge` from
those files without reading them again (`Judge.from_files`; `Judge.load` reads through it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autojudge.errors import InputError

FEATURE_SETUPS = ("DT", "DD-DT")
"""Judge inputs (docs/design.md §1.2): DT = h_target; DD-DT = [h_draft ; h_target]."""

FORMAT_VERSION = 1
JSON_NAME = "judge.json"
WEIGHTS_NAME = "weights.safetensors"
LIGHTGBM_NAME = "model.txt"
KINDS = ("logreg", "lightgbm")
RETRAIN = "remove the judge folder or retrain it with `autojudge train`"
"""The advice of a refusal of a judge whose files are cut or corrupt."""


class JudgeFormatError(InputError):
    """A judge folder is missing, incomplete, or written by an incompatible version."""


JSON_FIELDS = {
    "format": str, "format_version": int, "kind": str, "feature_setup": str, "num_features": int, "pair": dict,
    "intercept": (int, float), "default_threshold": (int, float), "threshold_source": str,
    "default_window": (int, type(None)), "acceptance": str, "thresholds": list, "metrics": dict, "settings": dict,
    "weights_file": str,
}
"""Every key of judge.json and its type (`to_json`); `default_window` may be null."""
REQUIRED_FIELDS = ("format", "format_version", "kind", "feature_setup", "pair", "intercept", "default_threshold",
                   "thresholds")
PAIR_FIELDS = {"target_id": str, "draft_id": str, "tokenizer_fingerprint": str, "target_hidden_size": int,
               "draft_hidden_size": int}


def _type_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list",
             type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))


def _check_fields(payload: dict[str, Any], fields: dict[str, Any], where: str) -> None:
    """Unknown keys and values of the wrong type are errors (bool is not a number here)."""
    extra = sorted(set(payload) - set(fields))
    if extra:
        raise JudgeFormatError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}")
    for key, kind in fields.items():
        if key not in payload:
            continue
        value = payload[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise JudgeFormatError(f"{where}: {key!r} must be {_type_name(kind)}, got {json.dumps(value)[:40]}")


def check_judge_meta(meta: Any, meta_path: Path) -> None:
    """judge.json as `to_json` writes it: an object, known keys of the right types, values in range."""
    if not isinstance(meta, dict):
        raise JudgeFormatError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != "autojudge-judge" or meta.get("format_version") != FORMAT_VERSION:
        raise JudgeFormatError(
            f"{meta_path}: unsupported judge format {meta.get('format')!r} version {meta.get('format_version')!r} "
            f"(this autojudge reads version {FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_FIELDS if key not in meta]
    if missing:
        raise JudgeFormatError(f"{meta_path}: missing key(s) {', '.join(map(repr, missing))}")
    _check_fields(meta, JSON_FIELDS, str(meta_path))
    if meta["kind"] not in KINDS:
        raise JudgeFormatError(f"{meta_path}: unknown judge kind {meta['kind']!r}; expected one of {', '.join(KINDS)}")
    if meta["feature_setup"] not in FEATURE_SETUPS:
        raise JudgeFormatError(f"{meta_path}: unknown feature setup {meta['feature_setup']!r}")
    pair = meta["pair"]
    missing = [key for key in PAIR_FIELDS if key not in pair]
    if missing:
        raise JudgeFormatError(f"{meta_path}: 'pair' lacks {', '.join(map(repr, missing))}")
    _check_fields(pair, PAIR_FIELDS, f"{meta_path}: 'pair'")
    for key in ("target_hidden_size", "draft_hidden_size"):
        if pair[key] < 1:
            raise JudgeFormatError(f"{meta_path}: pair {key!r} must be >= 1, got {pair[key]}")
    if not 0.0 <= meta["default_threshold"] <= 1.0:
        raise JudgeFormatError(f"{meta_path}: 'default_threshold' must be in [0, 1], got {meta['default_threshold']}")
    if meta.get("default_window") is not None and meta["default_window"] < 1:
        raise JudgeFormatError(f"{meta_path}: 'default_window' must be >= 1 or null, got {meta['default_window']}")
    if not math.isfinite(meta["intercept"]):
        raise JudgeFormatError(f"{meta_path}: 'intercept' must be finite, got {meta['intercept']}")
    features = pair["target_hidden_size"] + (pair["draft_hidden_size"] if meta["feature_setup"] == "DD-DT" else 0)
    if "num_features" in meta and meta["num_features"] != features:
        raise JudgeFormatError(
            f"{meta_path}: 'num_features' is {meta['num_features']} but feature setup {meta['feature_setup']} "
            f"of the pair's hidden sizes gives {features}"
        )
    for index, row in enumerate(meta["thresholds"]):
        if not isinstance(row, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values()
        ) or not isinstance(row.get("tau"), (int, float)):
            raise JudgeFormatError(f"{meta_path}: 'thresholds'[{index}] must be an object of numbers with 'tau'")
        bad = next((key for key, value in row.items() if not math.isfinite(value)), None)
        if bad is not None:
            raise JudgeFormatError(f"{meta_path}: 'thresholds'[{index}] {bad!r} must be a finite number, got {row[bad]}")
        if not 0.0 <= row["tau"] <= 1.0:
            raise JudgeFormatError(f"{meta_path}: 'thresholds'[{index}] 'tau' must be in [0, 1], got {row['tau']}")


def load_logreg_weights(path: Path, features: int) -> dict[str, np.ndarray]:
    """scaler_mean, scaler_scale and coef, each a finite float vector [F] (scale > 0)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise JudgeFormatError(f"{path.parent}: {WEIGHTS_NAME} is missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise JudgeFormatError(f"{path}: not a readable safetensors file ({err}); {RETRAIN}") from None
    names = ("scaler_mean", "scaler_scale", "coef")
    if sorted(tensors) != sorted(names):
        raise JudgeFormatError(f"{path}: expected tensors {', '.join(names)}, found {', '.join(sorted(tensors)) or 'none'}")
    for name in names:
        tensor = tensors[name]
        if tensor.shape != (features,):
            raise JudgeFormatError(f"{path}: {name!r} has shape {list(tensor.shape)}, expected [{features}]")
        if not np.issubdtype(tensor.dtype, np.floating) or not np.isfinite(tensor).all():
            raise JudgeFormatError(f"{path}: {name!r} must hold finite floats")
    if not (tensors["scaler_scale"] > 0).all():
        raise JudgeFormatError(f"{path}: 'scaler_scale' must be > 0 everywhere")
    return tensors


def num_features(meta: dict[str, Any]) -> int:
    """F: the feature width of a checked judge.json (DT: Ht, DD-DT: Hd + Ht)."""
    pair = meta["pair"]
    return pair["target_hidden_size"] + (pair["draft_hidden_size"] if meta["feature_setup"] == "DD-DT" else 0)


def read_judge_meta(folder: str | Path) -> dict[str, Any]:
    """judge.json of a judge folder, checked (JudgeFormatError names the file and the field)."""
    folder = Path(folder)
    meta_path = folder / JSON_NAME
    if not folder.is_dir():
        raise JudgeFormatError(f"{folder}: judge folder not found")
    if not meta_path.is_file():
        raise JudgeFormatError(f"{folder}: not a judge folder (no {JSON_NAME}; create one with `autojudge train`)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise JudgeFormatError(f"{meta_path}: not valid JSON ({getattr(err, 'msg', err)})") from None
    except RecursionError:
        raise JudgeFormatError(f"{meta_path}: nested too deeply to be a judge.json (it is not one `autojudge train` wrote)") from None
    except OSError as err:
        raise JudgeFormatError(f"{meta_path}: cannot read ({err.strerror})") from None
    check_judge_meta(meta, meta_path)
    return meta


@dataclass(frozen=True)
class JudgeFiles:
    """A judge folder as read and checked by `read_judge_folder`: what `Judge.from_files` builds a judge from."""

    folder: Path
    """The judge folder."""
    meta: dict[str, Any]
    """judge.json, checked (`read_judge_meta`)."""
    tensors: dict[str, np.ndarray] | None
    """Logistic regression: scaler_mean, scaler_scale and coef, each [F] (`load_logreg_weights`); None for LightGBM."""
    booster_text: str | None
    """LightGBM: the text model (`parse_lightgbm`); None for logistic regression."""


def read_judge_folder(folder: str | Path) -> JudgeFiles:
    """The whole folder, each file read once: judge.json, and the weights (or the LightGBM model) of the stated shape."""
    folder = Path(folder)
    meta = read_judge_meta(folder)
    if meta["kind"] == "logreg":
        return JudgeFiles(folder, meta, load_logreg_weights(folder / WEIGHTS_NAME, num_features(meta)), None)
    return JudgeFiles(folder, meta, None, parse_lightgbm(folder / LIGHTGBM_NAME, num_features(meta)))


def check_judge_folder(folder: str | Path) -> dict[str, Any]:
    """The whole folder checked (`read_judge_folder`); returns judge.json."""
    return read_judge_folder(folder).meta


def check_lightgbm_text(data: bytes, path: Path) -> None:
    """The structure LightGBM's loader trusts without checking (a truncated model aborts the process
    inside it): the header's `tree_sizes` give each tree's bytes, each block starts `Tree=i`, the trees
    end with `end of trees`, and the file ends with the parameters and `pandas_categorical:`, as
    `Booster.model_to_string` writes it. JudgeFormatError otherwise."""
    def refuse(reason: str) -> JudgeFormatError:
        return JudgeFormatError(f"{path}: not a LightGBM model ({reason}); the file is truncated or corrupt: {RETRAIN}")

    header, blank, _ = data.partition(b"\n\n")
    if not data.startswith(b"tree\n") or not blank:
        raise refuse("no model header")
    fields = dict(line.split(b"=", 1) for line in header.split(b"\n")[1:] if b"=" in line)
    try:
        sizes = [int(size) for size in fields[b"tree_sizes"].split()]
    except (KeyError, ValueError):
        raise refuse("no readable tree_sizes in the header") from None
    position = len(header) + 2
    for index, size in enumerate(sizes):
        if size < 1 or not data.startswith(b"Tree=%d\n" % index, position) or position + size > len(data):
            raise refuse(f"tree {index} of {len(sizes)} is cut or misplaced")
        position += size
    if not data.startswith(b"end of trees\n", position):
        raise refuse("no 'end of trees' after the trees")
    tail = data[position:]
    if b"\nend of parameters\n" not in tail or not tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].startswith(b"pandas_categorical:"):
        raise refuse("the file ends before its parameters")


def parse_lightgbm(path: Path, features: int) -> str:
    """The text of a LightGBM model file that is complete (`check_lightgbm_text`), that LightGBM parses,
    and whose feature count is `features`."""
    if not path.is_file():
        raise JudgeFormatError(f"{path.parent}: {path.name} is missing; {RETRAIN}")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise JudgeFormatError(f"{path}: cannot read ({err}); {RETRAIN}") from None
    check_lightgbm_text(data, path)  # before LightGBM sees it
    import lightgbm

    try:
        found = lightgbm.Booster(model_str=text).num_feature()
    except Exception as err:  # noqa: BLE001 - LightGBM raises its own error type on a bad model
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JudgeFormatError(f"{path}: not a LightGBM model ({reason}); {RETRAIN}") from None
    if found != features:
        raise JudgeFormatError(f"{path}: the model has {found} features, judge.json states {features}")
    return text
