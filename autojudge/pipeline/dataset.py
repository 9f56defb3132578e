"""Reading a mining folder into arrays, building judge features, and splitting by prompt.

A mining folder (the layout of `pipeline/shards.py`) holds `labels/*.parquet` (one row per mismatch with
`prompt_id`, `position`, `target_token`, `draft_token`, `important`, and the hidden
states `h_target` / `h_draft` as list<float32>), `responses/*.parquet` and
`manifest.json` (model ids, tokenizer fingerprint, hidden sizes).

Rows of one prompt are strongly correlated (same problem, same response), so every
split here is by prompt: a prompt's mismatches are all on one side (docs/design.md §1.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autojudge.judge import FEATURE_SETUPS, build_features  # noqa: F401 (re-exported for train)
from autojudge.errors import InputError



class DataError(InputError):
    """The mined data cannot be used (missing, malformed, too small, or one class only)."""


@dataclass
class MinedData:
    """All label rows of a mining folder as arrays (row i of every field is one mismatch)."""

    prompt_ids: np.ndarray
    """[n] object array of prompt id strings."""
    positions: np.ndarray
    """[n] int32 index of the mismatch in the response (0 = first generated token)."""
    target_tokens: np.ndarray
    """[n] int32 token the target chose."""
    draft_tokens: np.ndarray
    """[n] int32 token the draft proposed."""
    important: np.ndarray
    """[n] bool label: True when accepting the draft token changes the answer."""
    h_target: np.ndarray
    """[n, Ht] float32 target last hidden state at the draft token's position."""
    h_draft: np.ndarray
    """[n, Hd] float32 draft last hidden state at the same position."""
    manifest: dict[str, Any] = field(default_factory=dict)
    """The folder's manifest.json (model ids, fingerprint, hidden sizes, settings)."""

    def __len__(self) -> int:
        return len(self.important)

    def subset(self, mask: np.ndarray) -> "MinedData":
        """The rows where `mask` is True (same manifest)."""
        return MinedData(
            self.prompt_ids[mask], self.positions[mask], self.target_tokens[mask], self.draft_tokens[mask],
            self.important[mask], self.h_target[mask], self.h_draft[mask], self.manifest,
        )

    def fingerprint(self) -> str:
        """A short hash of the labels (prompt, position, tokens, label), in any row order: what a
        judge records it was trained on (`autojudge run` retrains when it changes)."""
        import hashlib

        rows = sorted(zip(self.prompt_ids.tolist(), self.positions.tolist(), self.target_tokens.tolist(),
                          self.draft_tokens.tolist(), self.important.tolist()))
        return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]

    def features(self, feature_setup: str) -> np.ndarray:
        """[n, F] float32 features of a setup: DT = h_target, DD-DT = [h_draft ; h_target]."""
        return build_features(self.h_target, self.h_draft, feature_setup)


def _list_column_to_matrix(column: Any, name: str, where: str) -> np.ndarray:
    """[n, H] float32 from a pyarrow list<float> column whose rows all have length H."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise DataError(f"{where}: column {name!r} has {array.null_count} null rows")
    rows = len(array)
    if rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    offsets = np.asarray(array.offsets)
    lengths = np.diff(offsets)
    if lengths.min() != lengths.max():
        raise DataError(f"{where}: column {name!r} has rows of different lengths ({lengths.min()}..{lengths.max()})")
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(rows, int(lengths[0]))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest.json of a mining folder ({} when absent; `shards.read_manifest`), a DataError when corrupt."""
    from autojudge.pipeline.shards import read_manifest as read_store_manifest

    try:
        return read_store_manifest(folder)
    except InputError as err:
        raise DataError(str(err)) from None


def read_mined(folder: str | Path) -> MinedData:
    """All label rows (with features) of a mining folder, shards in name order."""
    from autojudge.pipeline.shards import LABELS, read_table, require_manifest, shard_paths

    folder = Path(folder)
    label_dir = folder / LABELS
    if not folder.is_dir():
        raise DataError(f"{folder}: mining folder not found")
    shards = shard_paths(folder, LABELS)  # committed shards only (their responses shard exists)
    if not shards:
        raise DataError(f"{folder}: no label shards found (committed ones: {label_dir}/*.parquet, each with "
                        f"its responses/ sibling, from `autojudge mine`)")
    try:
        require_manifest(folder)  # an export's labels/ are not mined data
        table = read_table(folder, LABELS)  # committed shards only, every column of the schema
    except InputError as err:
        raise DataError(str(err)) from None
    where = str(label_dir)
    return MinedData(
        prompt_ids=np.asarray(table.column("prompt_id").to_pylist(), dtype=object),
        positions=table.column("position").to_numpy().astype(np.int32),
        target_tokens=table.column("target_token").to_numpy().astype(np.int32),
        draft_tokens=table.column("draft_token").to_numpy().astype(np.int32),
        important=table.column("important").to_numpy(zero_copy_only=False).astype(bool),
        h_target=_list_column_to_matrix(table.column("h_target"), "h_target", where),
        h_draft=_list_column_to_matrix(table.column("h_draft"), "h_draft", where),
        manifest=read_manifest(folder),
    )


def split_by_prompt(
    prompt_ids: np.ndarray, important: np.ndarray, val_fraction: float, seed: int, attempts: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """(train_mask, val_mask) over rows, assigning whole prompts to one side.

    Prompts are shuffled with a seeded generator and the first `val_fraction` of them
    (at least one) go to validation. When a side lacks a class, the next seed is tried
    (up to `attempts`); DataError when no split has both classes on both sides.
    """
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"validation fraction must be in (0, 1), got {val_fraction}")
    unique_prompts = np.array(sorted(set(prompt_ids.tolist())), dtype=object)
    if len(unique_prompts) < 2:
        raise DataError(f"labels come from {len(unique_prompts)} prompt(s); a prompt-level split needs at least 2")
    num_val = min(max(1, int(round(val_fraction * len(unique_prompts)))), len(unique_prompts) - 1)
    for attempt in range(attempts):
        order = np.random.default_rng(seed + attempt).permutation(len(unique_prompts))
        val_prompts = set(unique_prompts[order[:num_val]].tolist())
        val_mask = np.fromiter((pid in val_prompts for pid in prompt_ids), dtype=bool, count=len(prompt_ids))
        train_mask = ~val_mask
        if _has_both_classes(important[train_mask]) and _has_both_classes(important[val_mask]):
            return train_mask, val_mask
    raise DataError(
        f"no prompt-level split of {len(unique_prompts)} prompts ({int(important.sum())} important, "
        f"{int((~important).sum())} unimportant labels) puts both classes on both sides; mine more prompts"
    )


def _has_both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any()) and bool((~labels).any())


def check_trainable(data: MinedData, min_labels: int = 20, min_per_class: int = 4) -> None:
    """DataError with a clear message when the data is too small or has one class only."""
    num = len(data)
    positives = int(data.important.sum())
    negatives = num - positives
    source = data.manifest.get("settings", {}).get("out", "") if data.manifest else ""
    hint = "mine more prompts (autojudge mine --limit N)"
    if num < min_labels:
        raise DataError(f"only {num} labelled mismatches{' in ' + source if source else ''}; need at least {min_labels}: {hint}")
    if positives == 0 or negatives == 0:
        only = "important" if negatives == 0 else "unimportant"
        raise DataError(f"all {num} labelled mismatches are {only}: a judge needs both classes; {hint}")
    if min(positives, negatives) < min_per_class:
        raise DataError(
            f"{positives} important vs {negatives} unimportant mismatches: need at least {min_per_class} of each; {hint}"
        )
