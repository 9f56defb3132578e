"""`autojudge infer`: the decode stage on dict rows (no cluster), then Ray Data end to end.

Models are tiny random Llamas saved to tmp folders with the toy tokenizer, so the
whole path (spec -> load_pair -> engine) is real and fast.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

@pytest.fixture(scope="module")
def pair(tiny_pair_dirs: tuple[Path, Path]) -> tuple[Path, Path]:
    return tiny_pair_dirs


def test_parse_jsonl_marks_bad_lines(tmp_path: Path, write_corpus) -> None:
    from autojudge.pipeline.infer import parse_jsonl_file

    corpus = write_corpus(tmp_path / "c.jsonl", 12, broken=True)
    rows = parse_jsonl_file({"path": str(corpus), "bytes": corpus.read_bytes()})
    assert len(rows) == 12
    by_id = {row["id"]: row for row in rows}
    assert "not valid JSON" in by_id["c.jsonl:2"]["error"]
    assert "missing field 'question'" in by_id["no-text"]["error"]
    assert "empty prompt" in by_id["empty"]["error"]
    assert "must be a string" in by_id["typed"]["error"]
    assert by_id["long"]["error"] is None  # too long is decided by the tokenizer in the stage
    assert sum(row["error"] is None for row in rows) == 8


def test_decode_rows_without_cluster(pair: tuple[Path, Path], tmp_path: Path, write_corpus) -> None:
    """The stage function on dict rows: per-row errors, the rest decoded, same order, exact == greedy."""
    from autojudge.actors.decoder import DecodeStageConfig, decode_rows, load_decode_state
    from autojudge.setup import DecodingConfig
    from autojudge.pipeline.infer import parse_jsonl_file

    target, draft = pair
    config = DecodeStageConfig(DecodingConfig(str(target), str(draft), max_new_tokens=6), max_prompt_tokens=300)
    state = load_decode_state(config)
    corpus = write_corpus(tmp_path / "c.jsonl", 12, broken=True)
    rows = parse_jsonl_file({"path": str(corpus), "bytes": corpus.read_bytes()})
    table = decode_rows(state, rows)
    assert table.column("id").to_pylist() == [row["id"] for row in rows]
    out = {row["id"]: row for row in table.to_pylist()}
    assert out["long"]["error"].startswith("prompt too long")
    good = [row for row in table.to_pylist() if row["error"] is None]
    assert len(good) == 7
    for row in good:
        assert 1 <= row["new_tokens"] == len(row["token_ids"]) <= 6
        assert row["target_calls"] >= 1 and isinstance(row["text"], str)

    # exact mode is lossless: the same tokens as plain greedy decoding with the target
    import torch

    first = next(r for r in rows if r["error"] is None)
    from autojudge.actors.decoder import _prompt_ids

    ids = torch.tensor([_prompt_ids(state, first)])
    greedy = state.pair.target.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=2, pad_token_id=0)
    assert out[first["id"]]["token_ids"] == greedy[0, ids.shape[1]:].tolist()


def test_decode_failure_is_isolated(pair: tuple[Path, Path]) -> None:
    """A row that makes the engine raise gets an error; its batch-mates are still decoded."""
    from autojudge.actors.decoder import DecodeStageConfig, decode_rows, load_decode_state
    from autojudge.setup import DecodingConfig

    target, draft = pair
    state = load_decode_state(DecodeStageConfig(DecodingConfig(str(target), str(draft), max_new_tokens=4)))
    real_generate = state.engine.generate

    def flaky(prompts, *args, **kwargs):
        if any(len(p) > 40 for p in prompts):
            raise RuntimeError("simulated CUDA OOM")
        return real_generate(prompts, *args, **kwargs)

    state.engine.generate = flaky
    rows = [
        {"id": "a", "source": "x:1", "question": None, "prompt": "1 + 2 =", "error": None},
        {"id": "b", "source": "x:2", "question": None, "prompt": "7 + 7 = 14. " * 6, "error": None},
    ]
    out = decode_rows(state, rows).to_pylist()
    assert out[0]["error"] is None and out[0]["new_tokens"] >= 1
    assert "simulated CUDA OOM" in out[1]["error"]


def run_cli(args: list[str]) -> int:
    from autojudge.cli import main

    return main(["infer", *args])


def test_infer_jsonl_with_broken_rows(pair: tuple[Path, Path], tmp_path: Path, local_ray, write_corpus) -> None:
    target, draft = pair
    corpus = write_corpus(tmp_path / "corpus.jsonl", 40, broken=True)
    out = tmp_path / "out"
    code = run_cli(
        ["--input", str(corpus), "--output", str(out), "--target", str(target), "--draft", str(draft),
         "--max-new-tokens", "5", "--max-prompt-tokens", "300", "--batch-size", "8", "--num-replicas", "2",
         "--num-cpus-per-replica", "0.5"]
    )  # fmt: skip
    assert code == 0
    table = pq.read_table(out)
    assert table.num_rows == 40
    assert len(set(table.column("id").to_pylist())) == 40  # every row exactly once
    errors = {r["id"]: r["error"] for r in table.to_pylist() if r["error"]}
    assert set(errors) == {"corpus.jsonl:2", "no-text", "empty", "long", "typed"}
    ok = table.filter(pa.compute.is_null(table.column("error")))
    assert all(n >= 1 for n in ok.column("new_tokens").to_pylist())
    assert table.schema.field("token_ids").type == pa.list_(pa.int32())
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"] == 40 and summary["errors"] == 5 and summary["unique_ids"] == 40
    assert sum(summary["rows_per_replica"].values()) == 40


def test_infer_parquet_input_and_overwrite(pair: tuple[Path, Path], tmp_path: Path, local_ray, capsys) -> None:
    from autojudge.toy.world import generate_problems

    target, draft = pair
    records = [{"id": r["id"], "question": r["question"]} for r in generate_problems(10, seed=3)]
    records[4] = {"id": records[4]["id"], "question": None}  # a row with no text
    folder = tmp_path / "corpus"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(records[:6]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(records[6:]), folder / "part-1.parquet")
    out = tmp_path / "out"
    args = ["--input", str(folder), "--output", str(out), "--target", str(target), "--draft", str(draft),
            "--max-new-tokens", "3", "--batch-size", "4"]  # fmt: skip
    assert run_cli(args) == 0
    table = pq.read_table(out)
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in records)
    assert sum(e is not None for e in table.column("error").to_pylist()) == 1
    assert run_cli(args) == 2  # refuses to mix with an earlier run's shards
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli(args + ["--overwrite"]) == 0
    assert pq.read_table(out).num_rows == 10


def test_infer_rejects_mismatched_pair(pair: tuple[Path, Path], tmp_path: Path, capsys, write_corpus) -> None:
    target, _ = pair
    other = tmp_path / "other"
    shutil.copytree(target, other)
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["zzz-extra"] = 10_000
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    corpus = write_corpus(tmp_path / "c.jsonl", 2)
    code = run_cli(["--input", str(corpus), "--output", str(tmp_path / "o"), "--target", str(target), "--draft", str(other)])
    assert code == 2
    assert "different tokenizers" in capsys.readouterr().err


@pytest.mark.slow
def test_infer_1000_toy_prompts_no_lost_rows(tmp_path: Path, local_ray) -> None:
    """The shipped toy pair over 1,000 toy questions (about 40 s on 2 CPU cores): no lost rows."""
    from autojudge.toy.world import generate_problems

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": r["id"], "question": r["question"]}) + "\n" for r in generate_problems(1000, seed=2)))
    out = tmp_path / "out"
    code = run_cli(["--input", str(corpus), "--output", str(out), "--task", "toy", "--window", "8",
                    "--max-new-tokens", "160", "--batch-size", "50"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows"] == summary["unique_ids"] == 1000 and summary["errors"] == 0
    assert summary["tokens_per_target_call"] > 1.0
