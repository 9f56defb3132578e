"""`autojudge export`: a synthetic mining folder -> Parquet + card -> `datasets.load_dataset` round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from autojudge.cli import main

ROOT = Path(__file__).resolve().parents[1]
HT, HD = 8, 4


def write_mining_folder(folder: Path, num_prompts: int = 30, seed: int = 0) -> dict:
    """A mining folder: 2 committed shards (labels + responses each), manifest."""
    rng = np.random.default_rng(seed)
    label_rows, response_rows = [], []
    for p in range(num_prompts):
        pid = f"toy-{p}"
        num_labels = int(rng.integers(0, 5))
        for position in sorted(rng.choice(40, size=num_labels, replace=False).tolist()):
            label_rows.append(
                {
                    "prompt_id": pid, "position": position, "target_token": int(rng.integers(0, 100)),
                    "draft_token": int(rng.integers(0, 100)), "important": bool(rng.random() < 0.3),
                    "h_target": rng.standard_normal(HT).astype(np.float32).tolist(),
                    "h_draft": rng.standard_normal(HD).astype(np.float32).tolist(),
                }
            )  # fmt: skip
        error = "bad record" if p == num_prompts - 1 else None
        response_rows.append(
            {
                "prompt_id": pid, "prompt_token_ids": [1, 5, 6], "initial_response_ids": [7, 8, 2],
                "final_response_ids": [7, 9, 2], "target_answer": None if error else str(p),
                "num_labels": num_labels, "error": error,
            }
        )  # fmt: skip
    label_schema = pa.schema(
        [("prompt_id", pa.string()), ("position", pa.int32()), ("target_token", pa.int32()),
         ("draft_token", pa.int32()), ("important", pa.bool_()), ("h_target", pa.list_(pa.float32())),
         ("h_draft", pa.list_(pa.float32()))]
    )  # fmt: skip
    response_schema = pa.schema(
        [("prompt_id", pa.string()), ("prompt_token_ids", pa.list_(pa.int32())),
         ("initial_response_ids", pa.list_(pa.int32())), ("final_response_ids", pa.list_(pa.int32())),
         ("target_answer", pa.string()), ("num_labels", pa.int32()), ("error", pa.string())]
    )  # fmt: skip
    (folder / "labels").mkdir(parents=True)
    (folder / "responses").mkdir()
    # two shards split by prompt; a shard is committed by its responses file of the same name
    first = {f"toy-{p}" for p in range(num_prompts // 2)}
    for index, in_shard in enumerate([lambda pid: pid in first, lambda pid: pid not in first]):
        rows = [r for r in label_rows if in_shard(r["prompt_id"])]
        pq.write_table(pa.Table.from_pylist(rows, schema=label_schema), folder / "labels" / f"shard-{index:05d}.parquet")
        rows = [r for r in response_rows if in_shard(r["prompt_id"])]
        pq.write_table(pa.Table.from_pylist(rows, schema=response_schema), folder / "responses" / f"shard-{index:05d}.parquet")
    manifest = {
        "task": "toy", "target": "toy:target", "draft": "toy:draft", "tokenizer_fingerprint": "abcd1234",
        "target_hidden_size": HT, "draft_hidden_size": HD,
        "settings": {"max_new_tokens": 64, "limit": num_prompts, "seed": 1},
        "counts": {"prompts": num_prompts, "labels": len(label_rows),
                   "important": sum(r["important"] for r in label_rows), "errors": 1},
    }  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return {"labels": label_rows, "responses": response_rows, "manifest": manifest}


@pytest.fixture
def mined(tmp_path: Path) -> tuple[Path, dict]:
    folder = tmp_path / "mine"
    return folder, write_mining_folder(folder)


def test_export_round_trip_with_load_dataset(mined: tuple[Path, dict], tmp_path: Path) -> None:
    import datasets

    folder, truth = mined
    out = tmp_path / "export"
    assert main(["export", "--data", str(folder), "--out", str(out), "--val-fraction", "0.3"]) == 0

    labels = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))  # default config: labels
    assert set(labels) == {"train", "validation"}
    assert sum(len(split) for split in labels.values()) == len(truth["labels"])
    features = labels["train"].features
    assert features["important"] == datasets.ClassLabel(names=["unimportant", "important"])
    assert features["position"] == datasets.Value("int32")
    assert features["target_token"] == datasets.Value("int32")
    assert features["h_target"] == datasets.List(datasets.Value("float32"), length=HT)
    assert features["h_draft"] == datasets.List(datasets.Value("float32"), length=HD)

    # Same rows, same values (order within a split may differ from the shards).
    exported = {(r["prompt_id"], r["position"]): r for split in labels.values() for r in split}
    for row in truth["labels"]:
        got = exported[(row["prompt_id"], row["position"])]
        assert got["important"] == int(row["important"])
        assert got["draft_token"] == row["draft_token"]
        np.testing.assert_allclose(got["h_target"], row["h_target"], rtol=1e-6)

    # Split by prompt: no prompt on both sides, responses follow their labels.
    train_prompts = set(labels["train"]["prompt_id"])
    assert not train_prompts & set(labels["validation"]["prompt_id"])
    responses = datasets.load_dataset(str(out), "responses", cache_dir=str(tmp_path / "cache"))
    assert sum(len(split) for split in responses.values()) == len(truth["responses"])
    assert responses["train"].features["prompt_token_ids"] == datasets.List(datasets.Value("int32"))
    assert set(responses["train"]["prompt_id"]) >= train_prompts


def test_dataset_card(mined: tuple[Path, dict], tmp_path: Path) -> None:
    folder, truth = mined
    out = tmp_path / "export"
    assert main(["export", "--data", str(folder), "--out", str(out), "--license", "apache-2.0"]) == 0
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    metadata = yaml.safe_load(text.split("---\n")[1])
    assert metadata["license"] == "apache-2.0"
    assert metadata["task_categories"] == ["text-classification"]
    assert {c["config_name"] for c in metadata["configs"]} == {"labels", "responses"}
    info = metadata["autojudge"]
    assert info["target_model"] == "toy:target" and info["draft_model"] == "toy:draft"
    assert info["labels"] == len(truth["labels"])
    assert info["important"] == sum(r["important"] for r in truth["labels"])
    assert info["prompts"] == 30 and info["prompts_with_errors"] == 1
    assert "How it was mined" in text and '"max_new_tokens": 64' in text


def test_save_to_disk_copy(mined: tuple[Path, dict], tmp_path: Path) -> None:
    import datasets

    folder, truth = mined
    out = tmp_path / "export"
    assert main(["export", "--data", str(folder), "--out", str(out), "--save-to-disk", "--val-fraction", "0"]) == 0
    reloaded = datasets.load_from_disk(str(out / "save_to_disk" / "labels"))
    assert list(reloaded) == ["train"] and len(reloaded["train"]) == len(truth["labels"])


def test_refuses_existing_output_and_missing_labels(mined: tuple[Path, dict], tmp_path: Path, capsys) -> None:
    folder, _ = mined
    out = tmp_path / "export"
    out.mkdir()
    assert main(["export", "--data", str(folder), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--data", str(empty), "--out", str(tmp_path / "x")]) == 2
    assert "no label shards" in capsys.readouterr().err


def run_cli(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(ROOT), **env_extra}
    if "HF_TOKEN" not in env_extra:
        env.pop("HF_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "autojudge.cli", *args], env=env, capture_output=True, text=True, timeout=180, cwd=ROOT
    )


def test_push_without_network_fails_clearly_and_keeps_export(mined: tuple[Path, dict], tmp_path: Path) -> None:
    """HF_ENDPOINT points at a closed local port: the push fails fast, the local export loads."""
    import datasets

    folder, truth = mined
    out = tmp_path / "export"
    env = {"HF_TOKEN": "hf_dummy", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    result = run_cli(["export", "--data", str(folder), "--out", str(out), "--push", "--repo-id", "me/aj"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "push to https://huggingface.co/datasets/me/aj failed" in result.stderr
    assert f"{out} is complete and unchanged" in result.stderr
    labels = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert sum(len(split) for split in labels.values()) == len(truth["labels"])


def test_push_without_token_says_so_before_exporting(mined: tuple[Path, dict], tmp_path: Path) -> None:
    folder, _ = mined
    out = tmp_path / "export"
    result = run_cli(["export", "--data", str(folder), "--out", str(out), "--push", "--repo-id", "me/aj"], {}, tmp_path)
    assert result.returncode == 2
    assert "set HF_TOKEN" in result.stderr and "nothing was exported" in result.stderr
    assert not out.exists()
