"""Shard writing is atomic and resume sees exactly the committed prompts."""

from __future__ import annotations

from pathlib import Path

from autojudge.pipeline import shards


def _rows(prompt_id: str, num_labels: int) -> tuple[list[dict], dict]:
    labels = [
        {"prompt_id": prompt_id, "position": i, "target_token": 5, "draft_token": 6, "important": i % 2 == 0,
         "h_target": [0.5, 1.0], "h_draft": [2.0]}
        for i in range(num_labels)
    ]
    response = {"prompt_id": prompt_id, "prompt_token_ids": [1, 2], "initial_response_ids": [3], "final_response_ids": [4],
                "target_answer": "7", "num_labels": num_labels, "error": None}
    return labels, response


def test_write_read_and_counts(tmp_path: Path) -> None:
    labels_a, response_a = _rows("a", 3)
    labels_b, response_b = _rows("b", 0)
    shards.write_shard(tmp_path, "shard-1", labels_a, [response_a])
    error_row = dict(response_b, error="empty prompt", initial_response_ids=None, final_response_ids=None)
    shards.write_shard(tmp_path, "shard-2", labels_b, [error_row])
    table = shards.read_labels(tmp_path)
    assert table.num_rows == 3
    assert str(table.schema.field("position").type) == "int32"
    assert table.column("h_target").to_pylist()[0] == [0.5, 1.0]
    assert shards.finished_prompt_ids(tmp_path) == {"a", "b"}
    assert shards.count_rows(tmp_path) == {"prompts": 2, "labels": 3, "important": 2, "errors": 1}
    assert not list(tmp_path.rglob("*.tmp"))


def test_orphans_and_temporaries_are_removed(tmp_path: Path) -> None:
    labels, response = _rows("a", 2)
    shards.write_shard(tmp_path, "shard-1", labels, [response])
    # a crash between the labels rename and the responses rename leaves an orphan labels shard
    orphan_labels, _ = _rows("b", 2)
    shards.write_atomic(shards.pa.Table.from_pylist(orphan_labels, schema=shards.LABEL_SCHEMA), tmp_path / "labels" / "shard-2.parquet")
    (tmp_path / "responses" / ".shard-3.parquet.123.tmp").write_bytes(b"partial")
    assert shards.read_labels(tmp_path).num_rows == 2  # orphans are never read
    removed = shards.clean_orphans(tmp_path)
    assert {p.name for p in removed} == {"shard-2.parquet", ".shard-3.parquet.123.tmp"}
    assert shards.finished_prompt_ids(tmp_path) == {"a"}


def test_empty_folder(tmp_path: Path) -> None:
    assert shards.finished_prompt_ids(tmp_path) == set()
    assert shards.read_labels(tmp_path).num_rows == 0
    assert shards.count_rows(tmp_path)["prompts"] == 0
