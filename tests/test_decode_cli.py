"""`autojudge decode` end to end on a tiny random pair saved with the toy tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autojudge.cli import main
from autojudge.models import eos_token_ids, load_model, load_tokenizer, tokenizer_fingerprint

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair_dirs(tiny_pair_dirs):
    target_dir, draft_dir = tiny_pair_dirs
    return target_dir, draft_dir, load_model(str(target_dir)), load_tokenizer(str(target_dir))


def write_prompts(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_decode_exact_matches_generate_and_writes_records(pair_dirs, tmp_path, capsys):
    target_dir, draft_dir, target, tokenizer = pair_dirs
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "q1", "question": "Tom has 3 apples. How many?"}, {"id": "p1", "prompt": "Answer: 12"}])
    out = tmp_path / "out.jsonl"
    argv = ["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--mode", "exact", "--window", "3",
            "--max-new-tokens", "12", "--input", str(prompts), "--output", str(out), "--batch-size", "2"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["q1", "p1"]
    assert records[1]["prompt_token_ids"] == tokenizer("Answer: 12", add_special_tokens=False).input_ids
    eos = eos_token_ids(tokenizer, target)
    for record in records:
        with torch.no_grad():
            reference = target.generate(
                torch.tensor([record["prompt_token_ids"]]), do_sample=False, max_new_tokens=12,
                eos_token_id=eos, pad_token_id=0,
            )[0, len(record["prompt_token_ids"]):].tolist()
        ends = [i for i, token in enumerate(reference) if token in eos]
        reference = reference[: ends[0] + 1] if ends else reference  # generate pads after EOS
        assert record["token_ids"] == reference
        assert record["stop_reason"] == ("eos" if ends else "length")
        assert set(record["stats"]) >= {"target_calls", "draft_calls", "new_tokens", "wall_s"}
        assert record["stats"]["new_tokens"] == len(record["token_ids"])
        assert isinstance(record["text"], str)
    assert "tokens/call" in capsys.readouterr().out


def test_decode_autojudge_with_a_random_logistic_judge(pair_dirs, tmp_path):
    from autojudge.judge import Judge, PairInfo

    target_dir, draft_dir, target, tokenizer = pair_dirs
    width = target.config.hidden_size
    rng = np.random.default_rng(0)
    judge = Judge(
        "logreg", "DD-DT",
        PairInfo(str(target_dir), str(draft_dir), tokenizer_fingerprint(tokenizer), width, width),
        scaler_mean=np.zeros(2 * width), scaler_scale=np.ones(2 * width), coef=rng.normal(size=2 * width),
        default_threshold=0.5,
    )
    judge.save(tmp_path / "judge")
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "a", "prompt": "Question: 2+2"}])
    base = ["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--max-new-tokens", "15",
            "--input", str(prompts), "--window", "4"]
    assert main(base + ["--mode", "autojudge", "--judge", str(tmp_path / "judge"), "--threshold", "1.0",
                        "--output", str(tmp_path / "all.jsonl")]) == 0
    lenient = json.loads((tmp_path / "all.jsonl").read_text())
    # tau = 1 accepts every mismatch: each of the 3 cycles accepts all 4 draft tokens (+1 bonus = 15)
    assert lenient["stats"]["accepted_lengths"] == [0, 0, 0, 0, 3] or lenient["stop_reason"] == "eos"
    assert main(base + ["--mode", "autojudge", "--judge", str(tmp_path / "judge"), "--threshold", "0.0",
                        "--output", str(tmp_path / "none.jsonl")]) == 0
    assert main(base + ["--mode", "exact", "--output", str(tmp_path / "exact.jsonl")]) == 0
    strict, exact = (json.loads((tmp_path / f).read_text()) for f in ("none.jsonl", "exact.jsonl"))
    assert strict["token_ids"] == exact["token_ids"]  # tau = 0 rejects every mismatch: lossless


def test_decode_takes_the_window_the_judge_was_chosen_at(pair_dirs, tmp_path, capsys):
    from autojudge.judge import Judge, PairInfo

    target_dir, draft_dir, target, tokenizer = pair_dirs
    width = target.config.hidden_size
    judge = Judge(
        "logreg", "DT", PairInfo(str(target_dir), str(draft_dir), tokenizer_fingerprint(tokenizer), width, width),
        scaler_mean=np.zeros(width), scaler_scale=np.ones(width), coef=np.zeros(width), default_threshold=0.5,
    )
    judge.set_default_threshold(0.5, "test", window=5)
    judge.save(tmp_path / "judge")
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "a", "prompt": "Question: 2+2"}])
    base = ["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--max-new-tokens", "6",
            "--input", str(prompts), "--output", str(tmp_path / "o.jsonl")]
    assert main(base + ["--mode", "autojudge", "--judge", str(tmp_path / "judge")]) == 0
    assert "mode autojudge window 5:" in capsys.readouterr().out
    assert main(base + ["--mode", "autojudge", "--judge", str(tmp_path / "judge"), "--window", "3"]) == 0
    assert "mode autojudge window 3:" in capsys.readouterr().out  # an explicit --window wins
    assert main(base + ["--mode", "exact"]) == 0
    assert "mode exact window 8:" in capsys.readouterr().out  # no judge: the default


def test_decode_bad_input_names_file_and_line(pair_dirs, tmp_path, capsys):
    target_dir, draft_dir, _, _ = pair_dirs
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"id": 1, "prompt": "ok"}\n{"id": 2, "text": "no prompt"}\n')
    code = main(["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--input", str(prompts),
                 "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    assert f"{prompts}:2" in capsys.readouterr().err
    assert main(["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--mode", "autojudge",
                 "--input", str(prompts).replace("bad", "none"), "--output", str(tmp_path / "o.jsonl")]) == 2


def test_each_command_reads_the_judge_and_each_tokenizer_once(pair_dirs, tmp_path, monkeypatch):
    """One decoding setup per command (`autojudge.setup`): `decode` and `eval` read judge.json, the
    judge's weights and each model's tokenizer once, however many checks use them."""
    import collections
    from pathlib import Path

    import transformers

    from autojudge import judge_format
    from autojudge.judge import Judge, PairInfo

    target_dir, draft_dir, target, tokenizer = pair_dirs
    width = target.config.hidden_size
    judge = Judge(
        "logreg", "DT", PairInfo(str(target_dir), str(draft_dir), tokenizer_fingerprint(tokenizer), width, width),
        scaler_mean=np.zeros(width), scaler_scale=np.ones(width), coef=np.zeros(width), default_threshold=0.5,
        thresholds=[{"tau": 0.5, "recall_important": 1.0, "acceptance_rate": 0.5}],
    )
    judge.save(tmp_path / "judge")
    prompts = tmp_path / "prompts.jsonl"
    write_prompts(prompts, [{"id": "a", "question": "Tom has 3 apples. How many?"}])

    reads: collections.Counter[str] = collections.Counter()

    def counted(name, function):
        def wrapper(*args, **kwargs):
            reads[name] += 1
            return function(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(judge_format, "read_judge_meta", counted("judge.json", judge_format.read_judge_meta))
    monkeypatch.setattr(judge_format, "load_logreg_weights", counted("judge weights", judge_format.load_logreg_weights))
    from_pretrained = transformers.AutoTokenizer.from_pretrained

    def read_tokenizer(location, *args, **kwargs):
        reads[f"tokenizer of {Path(location).name}"] += 1
        return from_pretrained(location, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", staticmethod(read_tokenizer))
    once = {"judge.json": 1, "judge weights": 1, f"tokenizer of {target_dir.name}": 1, f"tokenizer of {draft_dir.name}": 1}

    assert main(["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--mode", "autojudge",
                 "--judge", str(tmp_path / "judge"), "--max-new-tokens", "4", "--input", str(prompts),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    assert reads == once
    reads.clear()
    assert main(["eval", "--judge", str(tmp_path / "judge"), "--task", "toy", "--limit", "1", "--max-new-tokens", "4",
                 "--top-k", "2", "--thresholds", "0.5", "--out", str(tmp_path / "eval")]) == 0  # the judge's pair
    assert reads == once
