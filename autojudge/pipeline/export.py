"""Export a mining folder as a Hugging Face `datasets` dataset with a dataset card.

Input: a mining folder (the layout of `pipeline/shards.py`) with `labels/*.parquet` (one row per mismatch),
`responses/*.parquet` (one row per prompt) and `manifest.json`.

Output folder, laid out exactly as `DatasetDict.push_to_hub` lays out a Hub repo, so
`datasets.load_dataset(OUT)` and `load_dataset(OUT, "responses")` read it back:

    OUT/README.md                                   dataset card (YAML header + text)
    OUT/labels/{train,validation}-0000i-of-0000n.parquet      config "labels" (default)
    OUT/responses/{train,validation}-0000i-of-0000n.parquet   config "responses"
    OUT/save_to_disk/{labels,responses}/            optional `save_to_disk` copies

Columns are cast to typed Features (int32 token ids, fixed-length float32 hidden
states, `important` as a ClassLabel); any extra columns the miner wrote pass through
with their Arrow types. When the pair's tokenizer can be loaded (`readable`, on by
default), decoded text columns are added next to the token ids so that someone
browsing the dataset sees what was judged: `target_text` / `draft_text` (the two
tokens) and `context_text` (the last `context_tokens` tokens before the position) per
label, and `prompt_text` / `initial_response_text` / `final_response_text` per prompt.
The context comes from the final response: the search moves left to right, so the
tokens before a visited position never change afterwards. The train/validation split is by prompt (a prompt's labels
and its response are on one side) and stable: it hashes the prompt id, so the same
prompt lands in the same split in every export.

The export is built in a staging folder of its own beside OUT (a unique hidden name, never one
a user may hold) and renamed to OUT when complete; a failure (a full disk included) removes the
staging folder and leaves OUT as it was. `--overwrite` replaces only an earlier export
(`EXPORT_ENTRIES`).

`push_export` uploads the card, then calls `push_to_hub` per config (which merges its
`configs`/`dataset_info` metadata into the card). It runs after the local export is
complete, so a failed push (no network, no token) leaves the local copy intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autojudge.checks import check_not_inside, check_overwrite
from autojudge.files import is_no_space, no_space
from autojudge.errors import InputError

LABEL_NAMES = ["unimportant", "important"]  # ClassLabel ids 0 / 1
EXPORT_ENTRIES = re.compile(
    r"README\.md|(labels|responses)/|(labels|responses)/(train|validation)-\d{5}-of-\d{5}\.parquet"
    r"|save_to_disk/|save_to_disk/(labels|responses)/|save_to_disk/(labels|responses)/dataset_dict\.json"
    r"|save_to_disk/(labels|responses)/(train|validation)/"
    r"|save_to_disk/(labels|responses)/(train|validation)/(data-\d{5}-of-\d{5}\.arrow|dataset_info\.json|state\.json)"
)
"""Everything an export folder holds (`checks.tree_entries` paths: folders end in '/'); `--overwrite`
replaces a folder holding nothing else."""


def is_export_entry(entry: str) -> bool:
    """A file or folder `export_dataset` writes (`EXPORT_ENTRIES`)."""
    return EXPORT_ENTRIES.fullmatch(entry) is not None


class ExportError(RuntimeError):
    """The export (or its push) failed; the message says what is intact and what to do."""


@dataclass
class ExportConfig:
    """Settings of `autojudge export`."""

    data: Path
    """Mining output folder (holds labels/, responses/, manifest.json)."""
    out: Path
    """Folder to write the dataset to (README.md + Parquet per config)."""
    val_fraction: float = 0.1
    """Share of prompts in the validation split (by a stable hash of the prompt id); 0 = train only."""
    license: str = "mit"
    """License id for the card's YAML header; set it to your prompts' and models' terms."""
    pretty_name: str | None = None
    """Human title of the dataset (default: derived from the task and models)."""
    max_shard_rows: int = 100_000
    """Rows per Parquet file."""
    save_to_disk: bool = False
    """Also write `Dataset.save_to_disk` copies under OUT/save_to_disk/."""
    overwrite: bool = False
    """Replace OUT when it already exists."""
    readable: bool = True
    """Add decoded text columns (needs the target's tokenizer; skipped with a note when it cannot be loaded)."""
    context_tokens: int = 24
    """Tokens of decoded context before each labelled position."""


@dataclass
class ExportResult:
    """What was written."""

    out: Path
    """The export folder."""
    counts: dict[str, Any] = field(default_factory=dict)
    """Rows per config and split, label balance."""


def split_of(prompt_id: str, val_fraction: float) -> str:
    """The split of a prompt: `validation` for a stable `val_fraction` share of ids, else `train`."""
    bucket = int(hashlib.sha256(prompt_id.encode("utf-8")).hexdigest()[:8], 16) / 0x1_0000_0000
    return "validation" if bucket < val_fraction else "train"


def _read_shards(data: Path, kind: str, required: bool) -> Any:
    """The committed `kind` shards of mining folder `data` as one table (`shards.read_table`, the
    one reader); None when there are none and they are not required."""
    from autojudge.pipeline.shards import read_table, shard_paths

    if not shard_paths(data, kind):
        if required:
            raise InputError(f"{data / kind}: no {kind.rstrip('s')} shards (committed *.parquet); is this an `autojudge mine` output folder?")
        return None
    return read_table(data, kind)


def _fixed_length(table: Any, column: str) -> int | None:
    """The common length of a list column's rows, or None when lengths differ / no rows."""
    import pyarrow.compute as pc

    if column not in table.column_names or table.num_rows == 0:
        return None
    lengths = pc.list_value_length(table.column(column))
    low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
    return int(low) if low == high and low is not None else None


def label_features(table: Any) -> Any:
    """Typed Features for the label rows; unknown columns keep their Arrow types."""
    import datasets

    features = datasets.Features.from_arrow_schema(table.schema)
    typed = {
        "prompt_id": datasets.Value("string"),
        "position": datasets.Value("int32"),
        "target_token": datasets.Value("int32"),
        "draft_token": datasets.Value("int32"),
        "important": datasets.ClassLabel(names=LABEL_NAMES),
    }
    for name in ("h_target", "h_draft"):
        typed[name] = datasets.List(datasets.Value("float32"), length=_fixed_length(table, name) or -1)
    for name, feature in typed.items():
        if name in features:
            features[name] = feature
    return features


def response_features(table: Any) -> Any:
    """Typed Features for the per-prompt rows; unknown columns keep their Arrow types."""
    import datasets

    features = datasets.Features.from_arrow_schema(table.schema)
    token_list = datasets.List(datasets.Value("int32"))
    typed = {
        "prompt_id": datasets.Value("string"),
        "prompt_token_ids": token_list,
        "initial_response_ids": token_list,
        "final_response_ids": token_list,
        "target_answer": datasets.Value("string"),
        "num_labels": datasets.Value("int32"),
        "error": datasets.Value("string"),
    }
    for name, feature in typed.items():
        if name in features:
            features[name] = feature
    return features


def load_export_tokenizer(manifest: dict[str, Any]) -> tuple[Any, str | None]:
    """(the target's tokenizer, None), or (None, why not) when it cannot be loaded."""
    from autojudge.errors import ModelPairError
    from autojudge.models import load_tokenizer, tokenizer_fingerprint

    spec = manifest.get("target")
    if not spec:
        return None, "the manifest names no target model"
    try:
        tokenizer = load_tokenizer(str(spec))
    except (ModelPairError, OSError, ValueError) as err:
        return None, f"the tokenizer of {spec!r} could not be loaded ({err})"
    expected = manifest.get("tokenizer_fingerprint")
    if expected and tokenizer_fingerprint(tokenizer) != expected:
        return None, f"the tokenizer of {spec!r} is not the one the labels were mined with (fingerprint differs)"
    return tokenizer, None


def add_readable_columns(labels: Any, responses: Any, tokenizer: Any, context_tokens: int) -> tuple[Any, Any]:
    """Label and response tables with decoded text columns appended (see the module docstring)."""
    import pyarrow as pa

    def decode(ids: list[int] | None) -> str | None:
        return None if ids is None else tokenizer.decode(ids, skip_special_tokens=False)

    prompts: dict[str, list[int]] = {}
    finals: dict[str, list[int]] = {}
    if responses is not None:
        for row in responses.select(["prompt_id", "prompt_token_ids", "final_response_ids"]).to_pylist():
            prompts[str(row["prompt_id"])] = row["prompt_token_ids"] or []
            finals[str(row["prompt_id"])] = row["final_response_ids"] or []
        texts = {
            name: [decode(ids) for ids in responses.column(column).to_pylist()]
            for name, column in (("prompt_text", "prompt_token_ids"), ("initial_response_text", "initial_response_ids"),
                                 ("final_response_text", "final_response_ids"))
            if column in responses.column_names
        }
        for name, values in texts.items():
            responses = responses.append_column(name, pa.array(values, pa.string()))
    rows = labels.select(["prompt_id", "position", "target_token", "draft_token"]).to_pylist()
    target_text = [decode([row["target_token"]]) for row in rows]
    draft_text = [decode([row["draft_token"]]) for row in rows]
    context_text = []
    for row in rows:
        pid, position = str(row["prompt_id"]), int(row["position"])
        before = prompts.get(pid, []) + finals.get(pid, [])[:position]
        context_text.append(decode(before[-context_tokens:]) if pid in finals else None)
    for name, values in (("target_text", target_text), ("draft_text", draft_text), ("context_text", context_text)):
        labels = labels.append_column(name, pa.array(values, pa.string()))
    return labels, responses


def _to_dataset_dict(table: Any, features: Any, val_fraction: float) -> Any:
    """A DatasetDict of train/validation Datasets (splits by prompt id) cast to `features`."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if "important" in table.column_names and pa.types.is_boolean(table.schema.field("important").type):
        index = table.schema.get_field_index("important")
        table = table.set_column(index, "important", table.column("important").cast(pa.int64()))
    table = table.cast(features.arrow_schema)
    splits = [split_of(str(pid), val_fraction) for pid in table.column("prompt_id").to_pylist()]
    split_array = pa.array(splits)
    result = {}
    for split in ("train", "validation"):
        mask = pc.equal(split_array, split)
        part = table.filter(mask)
        if part.num_rows or split == "train":
            result[split] = datasets.Dataset(
                datasets.table.InMemoryTable(part), info=datasets.DatasetInfo(features=features), split=split
            )
    return datasets.DatasetDict(result)


def _write_parquet(dataset_dict: Any, folder: Path, max_shard_rows: int) -> list[str]:
    """Hub-style shards `folder/{split}-0000i-of-0000n.parquet`; returns the file names. Written by
    pyarrow to the path (datasets' `to_parquet` writes through a Python file object, and a full disk
    there aborts the process inside pyarrow instead of raising)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for split, dataset in dataset_dict.items():
        num_shards = max(1, -(-len(dataset) // max_shard_rows))
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
            name = f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            schema = shard.features.arrow_schema  # embeds the Features in the schema metadata
            pq.write_table(shard.with_format("arrow")[:].cast(schema), folder / name)
            names.append(name)
    return names


def _size_category(num: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num < limit:
            return name
    return "1M<n<10M"


def build_card(manifest: dict[str, Any], counts: dict[str, Any], config: ExportConfig, configs: list[str]) -> str:
    """README.md text: YAML metadata (license, task, configs, models, counts) + description."""
    target = manifest.get("target", "unknown")
    draft = manifest.get("draft", "unknown")
    task = manifest.get("task", "unknown")
    settings = manifest.get("settings", {})
    labels = counts["labels"]
    important_fraction = counts["important"] / labels["total"] if labels["total"] else 0.0
    pretty_name = config.pretty_name or f"AutoJudge mismatch labels ({task}, {target} / {draft})"
    metadata: dict[str, Any] = {
        "license": config.license,
        "pretty_name": pretty_name,
        "task_categories": ["text-classification"],
        "language": ["en"],
        "tags": ["speculative-decoding", "autojudge", "lossy-speculative-decoding", "synthetic"],
        "size_categories": [_size_category(labels["total"])],
        "configs": [
            {
                "config_name": name,
                "data_files": [
                    {"split": split, "path": f"{name}/{split}-*.parquet"} for split in counts["splits"][name]
                ],
                **({"default": True} if name == "labels" else {}),
            }
            for name in configs
        ],
        "autojudge": {
            "task": task,
            "target_model": target,
            "draft_model": draft,
            "tokenizer_fingerprint": manifest.get("tokenizer_fingerprint"),
            "target_hidden_size": manifest.get("target_hidden_size"),
            "draft_hidden_size": manifest.get("draft_hidden_size"),
            "prompts": counts["prompts"],
            "prompts_with_errors": counts["errors"],
            "labels": labels["total"],
            "important": counts["important"],
            "important_fraction": round(important_fraction, 4),
        },
    }
    split_lines = "\n".join(
        f"| {name} | {split} | {rows} |" for name in configs for split, rows in counts["splits"][name].items()
    )
    settings_text = json.dumps(settings, indent=2, sort_keys=True, default=str) if settings else "{}"
    body = f"""
# {pretty_name}

Token-level labels for **AutoJudge** lossy speculative decoding: each row of the `labels`
config is one position where the draft model's greedy token differs from the target
model's, labelled **important** when accepting the draft token changes the final answer
and **unimportant** when it does not. The `responses` config holds one row per prompt.

- Target model: `{target}`
- Draft model: `{draft}` (same tokenizer, fingerprint `{manifest.get("tokenizer_fingerprint")}`)
- Task: `{task}`
- Prompts: {counts["prompts"]} ({counts["errors"]} with errors, kept with their `error` message)
- Labelled mismatches: {labels["total"]}; important: {counts["important"]} ({important_fraction:.1%}),
  unimportant: {labels["total"] - counts["important"]}

| config | split | rows |
|---|---|---|
{split_lines}

The split is by prompt (a stable hash of `prompt_id`, {config.val_fraction:.0%} validation): all
labels of one prompt are on the same side.

## How it was mined

Semi-greedy search (AutoJudge, docs/design.md §1.1), greedy decoding throughout. For each prompt
the target's own greedy response `y` defines the reference answer `a*`. The draft is
teacher-forced over `y`; at the first unvisited mismatch `m` the draft token `d_m` is
swapped in and the target regenerates the rest greedily. If the new response reaches the
same answer as `a*` the mismatch is labelled unimportant and the new response is kept,
otherwise important and `y` is kept; the search then moves past `m`. Features are the
last-layer hidden states (after the final norm) at the position holding the draft token:
`h_target` from the target and `h_draft` from the draft.

Mining settings:

```json
{settings_text}
```

## Columns

`labels`: `prompt_id` (string), `position` (int32, 0 = first generated token),
`target_token` / `draft_token` (int32 token ids), `important` (ClassLabel:
0 = unimportant, 1 = important), `h_target` / `h_draft` (fixed-length float32 lists).

`responses`: `prompt_id`, `prompt_token_ids`, `initial_response_ids` (target greedy),
`final_response_ids` (after accepted swaps), `target_answer`, `num_labels`, `error`.

Decoded text columns ({counts.get("readable", "not requested")}): in `labels`, `target_text` and
`draft_text` (the two tokens as text, e.g. `" 12"` vs `" twelve"`) and `context_text` (the
last {counts.get("context_tokens", 24)} tokens before the position, prompt included: what the
models saw); in `responses`, `prompt_text`, `initial_response_text` and `final_response_text`.
Special tokens are kept in the text (the chat template's `<|im_start|>` markers show the turns).

## Use

```python
from datasets import load_dataset
labels = load_dataset("PATH_OR_REPO_ID")               # config "labels"
responses = load_dataset("PATH_OR_REPO_ID", "responses")
```

Train a judge: `autojudge train --data MINING_DIR --out JUDGE_DIR` (reads the mining folder).
"""
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n{body}"


def export_dataset(config: ExportConfig) -> ExportResult:
    """Write the dataset (Parquet per config + card) to `config.out`; returns the counts.

    Written to a temporary sibling folder first and renamed at the end, so OUT is never
    left half-written.
    """
    import datasets

    from autojudge.pipeline.dataset import read_manifest
    from autojudge.pipeline.shards import require_manifest

    datasets.disable_progress_bars()  # one bar per tiny shard is noise; the command prints a summary
    data = Path(config.data)
    if not data.is_dir():
        raise InputError(f"{data}: mining folder not found")
    if not 0.0 <= config.val_fraction < 1.0:
        raise InputError(f"--val-fraction must be in [0, 1), got {config.val_fraction}")
    out = Path(config.out)
    check_not_inside("--out", out, "--data", data)  # --overwrite would delete the mining folder
    if out.exists() and config.overwrite:
        check_overwrite("--out", out, is_export_entry, "`autojudge export`")
    if out.exists() and not config.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it")
    require_manifest(data)
    manifest = read_manifest(data)

    labels = _read_shards(data, "labels", required=True)
    responses = _read_shards(data, "responses", required=False)
    readable_note = "not requested (--no-text)"
    if config.readable:
        tokenizer, why_not = load_export_tokenizer(manifest)
        if tokenizer is None:
            readable_note = f"not added: {why_not}"
        else:
            labels, responses = add_readable_columns(labels, responses, tokenizer, config.context_tokens)
            readable_note = "added"
    tables = {"labels": (labels, label_features(labels))}
    if responses is not None:
        tables["responses"] = (responses, response_features(responses))

    staging = _unique_sibling(out, "partial")  # ours alone: a name no one else holds
    try:
        staging.mkdir(parents=True)
        counts = _write_export(staging, tables, labels, responses, manifest, config, readable_note)
        _replace_folder(staging, out)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if is_no_space(err):
            raise no_space(out.parent) from None
        raise
    return ExportResult(out=out, counts=counts)


def _write_export(staging: Path, tables: dict[str, Any], labels: Any, responses: Any, manifest: dict[str, Any],
                  config: ExportConfig, readable_note: str) -> dict[str, Any]:
    """Write the Parquet shards (and `save_to_disk` copies) and the card into `staging`; return the counts."""
    split_counts: dict[str, dict[str, int]] = {}
    for name, (table, features) in tables.items():
        dataset_dict = _to_dataset_dict(table, features, config.val_fraction)
        _write_parquet(dataset_dict, staging / name, config.max_shard_rows)
        if config.save_to_disk:
            dataset_dict.save_to_disk(str(staging / "save_to_disk" / name))
        split_counts[name] = {split: len(dataset) for split, dataset in dataset_dict.items()}

    important = int(labels.column("important").cast("int64").to_numpy().sum()) if labels.num_rows else 0
    if responses is not None:
        prompts = responses.num_rows
        errors = responses.num_rows - responses.column("error").null_count if "error" in responses.column_names else 0
    else:
        prompts = len(set(labels.column("prompt_id").to_pylist()))
        errors = 0
    counts = {
        "prompts": prompts,
        "errors": errors,
        "labels": {"total": labels.num_rows},
        "important": important,
        "splits": split_counts,
        "readable": readable_note,
        "context_tokens": config.context_tokens,
    }
    (staging / "README.md").write_text(build_card(manifest, counts, config, list(tables)), encoding="utf-8")
    return counts


def _unique_sibling(out: Path, kind: str) -> Path:
    """A hidden name beside `out` that nothing holds: `.OUT.<pid>-<random>.<kind>`."""
    return out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def _replace_folder(staging: Path, out: Path) -> None:
    """Rename the finished `staging` to `out`; an earlier export at `out` (checked by `check_overwrite`)
    is moved aside first and removed after, so OUT is never a mix of the two."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = _unique_sibling(out, "old")
    os.rename(out, old)
    os.rename(staging, out)
    if old.is_symlink():
        old.unlink()  # the link is replaced; the folder it pointed to is left as it was
    else:
        shutil.rmtree(old)


def hub_token(token: str | None = None) -> str | None:
    """The token a push uses: `token`, else $HF_TOKEN, else a stored `hf auth login` token."""
    from huggingface_hub import get_token

    return token or os.environ.get("HF_TOKEN") or get_token()


def check_push(repo_id: str | None, token: str | None = None) -> None:
    """Before anything is exported: a Hub dataset id ORG/NAME and a token to push with (InputError otherwise)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise InputError("--push needs --repo-id ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise InputError(f"--repo-id {repo_id!r} is not a Hub repository id ({str(err).split(':')[0]})") from None
    if "/" not in repo_id:
        raise InputError(f"--repo-id must be ORG/NAME (your user or organisation, then the dataset), got {repo_id!r}")
    if not hub_token(token):
        raise InputError("--push needs a Hugging Face write token: set HF_TOKEN or run `hf auth login` (nothing was exported)")


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an `autojudge export` (its dataset card with the `autojudge` table, and labels/)."""
    card = Path(folder) / "README.md"
    if not card.is_file() or not (Path(folder) / "labels").is_dir():
        return False
    try:
        text = card.read_text(encoding="utf-8")
        header = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, IndexError):
        return False
    return isinstance(header, dict) and isinstance(header.get("autojudge"), dict)


def push_export(out: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload an export folder to the Hub: card first, then `push_to_hub` per config.

    The token is `hub_token(token)` (`check_push` has refused a push without one before the export).
    Any failure becomes an ExportError that says the local export is intact.
    """
    import datasets
    from huggingface_hub import HfApi

    out = Path(out)
    token = hub_token(token)
    intact = f"the local export in {out} is complete and unchanged"
    if not token:
        raise ExportError(f"cannot push to {repo_id}: set HF_TOKEN (a write token) or run `hf auth login`; {intact}")
    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_file(
            path_or_fileobj=str(out / "README.md"), path_in_repo="README.md", repo_id=repo_id, repo_type="dataset"
        )
        for config_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name in ("labels", "responses")):
            dataset_dict = datasets.load_dataset(str(out), config_dir.name)
            dataset_dict.push_to_hub(
                repo_id, config_name=config_dir.name, set_default=config_dir.name == "labels", token=token
            )
    except Exception as err:  # network, auth, quota: all leave the local copy as it was
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise ExportError(
            f"push to https://huggingface.co/datasets/{repo_id} failed ({reason}); {intact}. "
            f"Retry later with the same `autojudge export ... --push` (it pushes the existing export), "
            f"or `hf upload {repo_id} {out} --repo-type dataset`."
        ) from None
    return f"https://huggingface.co/datasets/{repo_id}"
