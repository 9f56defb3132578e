"""Every command against a table of bad options and bad files: a one-line message naming the
problem, a non-zero exit, no traceback, nothing started (no Ray, no model) and nothing lost.

Each case runs `python -m autojudge.cli ...` in a subprocess, as a user would. The files
(broken JSONL, broken judges, broken mining folders, a model folder with another
tokenizer) are built once per module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the bad world


def write_mining_folder(folder: Path, hidden: tuple[int, int] = (8, 4), shards_count: int = 2,
                        prompts_per_shard: int = 6) -> dict[str, int]:
    """A small mining folder written by the real shard writer; returns labels per shard."""
    import numpy as np

    from autojudge.pipeline import shards

    rng = np.random.default_rng(0)
    counts = {}
    for index in range(shards_count):
        labels, responses = [], []
        for p in range(prompts_per_shard):
            pid = f"toy-{index}-{p}"
            n = 3
            for position in range(n):
                labels.append({
                    "prompt_id": pid, "position": position, "target_token": 5, "draft_token": 6,
                    "important": bool((p + position) % 3 == 0),
                    "h_target": rng.standard_normal(hidden[0]).tolist(), "h_draft": rng.standard_normal(hidden[1]).tolist(),
                })  # fmt: skip
            responses.append({"prompt_id": pid, "prompt_token_ids": [1, 2], "initial_response_ids": [3],
                              "final_response_ids": [3], "target_answer": "1", "num_labels": n, "error": None})
        name = f"shard-{index:05d}"
        shards.write_shard(folder, name, labels, responses)
        counts[name] = len(labels)
    manifest = {"task": "toy", "target": "toy:target", "draft": "toy:draft", "tokenizer_fingerprint": "abcd",
                "target_hidden_size": hidden[0], "draft_hidden_size": hidden[1], "settings": {"seed": 1},
                "counts": shards.count_rows(folder), "status": "complete"}
    shards.write_json_atomic(manifest, folder / shards.MANIFEST)
    return counts


def write_judge(folder: Path, fingerprint: str, target_hidden: int, draft_hidden: int) -> Path:
    """A logistic-regression judge (DT features) for a pair with these facts."""
    import numpy as np

    from autojudge.judge import Judge, PairInfo

    pair = PairInfo("toy:target", "toy:draft", fingerprint, target_hidden, draft_hidden)
    judge = Judge("logreg", "DT", pair, scaler_mean=np.zeros(target_hidden), scaler_scale=np.ones(target_hidden),
                  coef=np.full(target_hidden, 0.01), intercept=-2.0)
    return judge.save(folder)


def edit_json(folder: Path, change: Callable[[dict], Any]) -> Path:
    path = folder / "judge.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from autojudge.models import load_tokenizer, resolve_spec, tokenizer_fingerprint
    from autojudge.toy.world import generate_problems

    base = tmp_path_factory.mktemp("bad")
    w: dict[str, Path] = {"base": base}
    good = [json.dumps(record) for record in generate_problems(3, 2)]
    w["good"] = base / "good.jsonl"
    w["good"].write_text("\n".join(good) + "\n")
    w["utf8"] = base / "bad-utf8.jsonl"
    w["utf8"].write_bytes((good[0] + "\n").encode() + b'{"id": "x", "question": "caf\xe9 au lait"}\n')
    w["empty"] = base / "empty.jsonl"
    w["empty"].write_text("\n\n")
    w["long"] = base / "long.jsonl"
    long_question = " ".join(str(i % 10) for i in range(400))
    w["long"].write_text(json.dumps({"id": "long-1", "question": long_question, "answer": "x\n#### 1"}) + "\n")
    w["bad_parquet"] = base / "corpus.parquet"
    w["bad_parquet"].write_bytes(b"PAR1 not really parquet PAR1")
    w["bad_gz"] = base / "prompts.jsonl.gz"
    w["bad_gz"].write_bytes(b"\x1f\x8b\x08 truncated")
    w["afile"] = base / "a-file"
    w["afile"].write_text("not a folder")
    w["adir"] = base / "a-dir"
    w["adir"].mkdir()
    w["corpus_dir"] = base / "corpus"
    w["corpus_dir"].mkdir()
    shutil.copy(w["good"], w["corpus_dir"] / "part.jsonl")

    tokenizer = load_tokenizer("toy:target")
    fingerprint = tokenizer_fingerprint(tokenizer)
    draft_hidden = json.loads((Path(resolve_spec("toy:draft")[0]) / "config.json").read_text())["hidden_size"]
    w["judge"] = write_judge(base / "judge", fingerprint, 128, draft_hidden)
    w["judge_other_pair"] = write_judge(base / "judge-other", "0000111122223333", 64, 32)

    def judge_variant(name: str, change: Callable[[Path], Any]) -> None:
        folder = base / f"judge-{name}"
        shutil.copytree(w["judge"], folder)
        change(folder)
        w[f"judge_{name}"] = folder

    judge_variant("not_object", lambda f: (f / "judge.json").write_text("[1, 2, 3]"))
    judge_variant("not_json", lambda f: (f / "judge.json").write_text("{oops"))
    judge_variant("missing_key", lambda f: edit_json(f, lambda m: m.pop("default_threshold")))
    judge_variant("extra_key", lambda f: edit_json(f, lambda m: m.update(surprise=1)))
    judge_variant("wrong_type", lambda f: edit_json(f, lambda m: m["pair"].update(target_hidden_size="128")))
    judge_variant("threshold_5", lambda f: edit_json(f, lambda m: m.update(default_threshold=5)))
    judge_variant("window_0", lambda f: edit_json(f, lambda m: m.update(default_window=0)))
    def lightgbm_garbage(folder: Path) -> None:
        edit_json(folder, lambda m: m.update(kind="lightgbm", weights_file="model.txt"))
        (folder / "model.txt").write_text("tree\nthis is not a model\n")

    judge_variant("lightgbm_garbage", lightgbm_garbage)
    judge_variant("weights_garbage", lambda f: (f / "weights.safetensors").write_bytes(b"\x00garbage" * 10))

    def wrong_shape(folder: Path) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        save_file({"scaler_mean": np.zeros(7, np.float32), "scaler_scale": np.ones(7, np.float32),
                   "coef": np.zeros(7, np.float32)}, str(folder / "weights.safetensors"))

    judge_variant("weights_shape", wrong_shape)

    w["mined"] = base / "mined"
    write_mining_folder(w["mined"])
    w["mined_corrupt"] = base / "mined-corrupt"
    shutil.copytree(w["mined"], w["mined_corrupt"])
    (w["mined_corrupt"] / "labels" / "shard-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    for name, text in (("manifest_not_json", "{broken"), ("manifest_list", "[1, 2]")):
        folder = base / name
        shutil.copytree(w["mined"], folder)
        (folder / "manifest.json").write_text(text)
        w[name] = folder

    # a model folder whose tokenizer differs from the toy pair's by one added token
    other = base / "other-tokenizer-model"
    shutil.copytree(resolve_spec("toy:draft")[0], other)
    spec = json.loads((other / "tokenizer.json").read_text())
    spec["added_tokens"].append({"id": len(spec["model"]["vocab"]) + 50, "content": "<|other|>", "single_word": False,
                                 "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    (other / "tokenizer.json").write_text(json.dumps(spec))
    w["other_tokenizer"] = other
    return w


# ----------------------------------------------------------------------------- the table

Case = tuple[str, Callable[[dict[str, Path]], list[str]], str]
TOY = ["--target", "toy:target", "--draft", "toy:draft"]


def decode(*extra: str) -> Callable[[dict[str, Path]], list[str]]:
    def argv(w: dict[str, Path]) -> list[str]:
        args = ["decode", "--task", "toy", "--input", str(w["good"]), "--output", str(w["base"] / "out" / "d.jsonl")]
        return args + [item.format(**w) for item in extra]
    return argv


def judge_decode(name: str) -> Callable[[dict[str, Path]], list[str]]:
    return decode("--mode", "autojudge", "--judge", "{" + name + "}")


def command(*parts: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda w: [part.format(**w) for part in parts]


CHEAP_CASES: list[Case] = [
    # decode: options, files, outputs, judges
    ("decode-window-0", decode("--window", "0"), r"--window must be >= 1, got 0"),
    ("decode-batch-0", decode("--batch-size", "0"), r"--batch-size must be >= 1"),
    ("decode-topk-0", decode("--mode", "topk", "--top-k", "0"), r"--top-k must be >= 1"),
    ("decode-budget-negative", decode("--max-new-tokens", "-5"), r"--max-new-tokens must be >= 1"),
    ("decode-limit-0", decode("--limit", "0"), r"--limit must be >= 1"),
    ("decode-threshold-2", decode("--mode", "autojudge", "--judge", "{judge}", "--threshold", "2"),
     r"--threshold must be <= 1, got 2"),
    ("decode-threshold-nan", decode("--mode", "autojudge", "--judge", "{judge}", "--threshold", "nan"),
     r"--threshold must be a finite number"),
    ("decode-no-judge", decode("--mode", "autojudge"), r"needs --judge"),
    ("decode-input-missing", command("decode", "--input", "{base}/nope.jsonl", "--output", "{base}/o.jsonl"),
     r"nope\.jsonl: file not found"),
    ("decode-input-is-dir", command("decode", "--input", "{adir}", "--output", "{base}/o.jsonl"), r"is a folder"),
    ("decode-input-utf8", command("decode", "--task", "toy", "--input", "{utf8}", "--output", "{base}/o.jsonl"),
     r"bad-utf8\.jsonl:2: not valid UTF-8 \(byte 0xe9"),
    ("decode-input-empty", command("decode", "--task", "toy", "--input", "{empty}", "--output", "{base}/o.jsonl"),
     r"no records"),
    ("decode-output-is-dir", command("decode", "--input", "{good}", "--output", "{adir}"), r"is a folder, expected a file"),
    ("decode-output-under-file", command("decode", "--input", "{good}", "--output", "{afile}/sub/o.jsonl"),
     r"cannot be created, .*a-file is a file"),
    ("judge-not-object", judge_decode("judge_not_object"), r"judge\.json: expected a JSON object, got list"),
    ("judge-not-json", judge_decode("judge_not_json"), r"judge\.json: not valid JSON"),
    ("judge-missing-key", judge_decode("judge_missing_key"), r"missing key\(s\) 'default_threshold'"),
    ("judge-extra-key", judge_decode("judge_extra_key"), r"unknown key\(s\) 'surprise'"),
    ("judge-wrong-type", judge_decode("judge_wrong_type"), r"'target_hidden_size' must be an integer"),
    ("judge-threshold-5", judge_decode("judge_threshold_5"), r"'default_threshold' must be in \[0, 1\], got 5"),
    ("judge-window-0", judge_decode("judge_window_0"), r"'default_window' must be >= 1"),
    ("judge-weights-garbage", judge_decode("judge_weights_garbage"), r"weights\.safetensors: not a readable safetensors"),
    ("judge-weights-shape", judge_decode("judge_weights_shape"), r"'scaler_mean' has shape \[7\], expected \[128\]"),
    ("judge-lightgbm-garbage", judge_decode("judge_lightgbm_garbage"), r"model\.txt: not a LightGBM model"),
    ("judge-folder-missing", command("decode", "--mode", "autojudge", "--judge", "{base}/no-judge", "--input", "{good}",
                                     "--output", "{base}/o.jsonl"), r"judge folder not found"),
    # eval
    ("eval-thresholds-out-of-range", command("eval", "--judge", "{judge}", "--thresholds", "2,-1", "--out", "{base}/e"),
     r"--thresholds must be <= 1, got 2"),
    ("eval-budget-negative", command("eval", "--max-new-tokens", "-1", "--out", "{base}/e"), r"--max-new-tokens must be >= 1"),
    ("eval-limit-0", command("eval", "--limit", "0", "--out", "{base}/e"), r"--limit must be >= 1"),
    ("eval-topk-fraction", command("eval", "--top-k", "2.5", "--out", "{base}/e"), r"--top-k takes whole numbers"),
    ("eval-max-drop", command("eval", "--max-drop", "-3", "--out", "{base}/e"), r"--max-drop must be >= 0"),
    ("eval-workers-negative", command("eval", "--workers", "-1", "--out", "{base}/e"), r"--workers must be >= 0, got -1"),
    ("run-eval-workers-negative", command("run", "--eval-workers", "-2", "--out", "{base}/r"), r"--eval-workers must be >= 0, got -2"),
    ("eval-out-is-file", command("eval", "--out", "{afile}"), r"is a file, expected a folder"),
    ("eval-input-utf8", command("eval", "--input", "{utf8}", "--out", "{base}/e"), r"bad-utf8\.jsonl:2: not valid UTF-8"),
    ("eval-empty-input", command("eval", "--input", "{empty}", "--out", "{base}/e"), r"no problems to evaluate"),
    ("eval-broken-judge", command("eval", "--judge", "{judge_threshold_5}", "--out", "{base}/e"), r"default_threshold"),
    # mine
    ("mine-batch-0", command("mine", *TOY, "--out", "{base}/m", "--batch-size", "0"), r"--batch-size must be >= 1"),
    ("mine-workers-negative", command("mine", *TOY, "--out", "{base}/m", "--workers", "-1"), r"--workers must be >= 0"),
    ("mine-out-is-file", command("mine", *TOY, "--out", "{afile}"), r"is a file, expected a folder"),
    ("mine-manifest-not-json", command("mine", *TOY, "--workers", "0", "--limit", "2", "--out", "{manifest_not_json}"),
     r"manifest\.json: corrupt manifest"),
    ("mine-manifest-list", command("mine", *TOY, "--workers", "0", "--limit", "2", "--out", "{manifest_list}"),
     r"manifest\.json: corrupt manifest"),
    ("mine-tokenizers-differ", command("mine", "--target", "toy:target", "--draft", "{other_tokenizer}", "--workers", "1",
                                       "--limit", "2", "--out", "{base}/m2"), r"use different tokenizers"),
    # infer
    ("infer-threshold-2", command("infer", "--input", "{good}", "--output", "{base}/i", "--mode", "autojudge",
                                  "--judge", "{judge}", "--threshold", "2"), r"--threshold must be <= 1"),
    ("infer-batch-0", command("infer", "--input", "{good}", "--output", "{base}/i", "--batch-size", "0"),
     r"--batch-size must be >= 1"),
    ("infer-empty-corpus", command("infer", "--input", "{empty}", "--output", "{base}/i"), r"the corpus has no rows"),
    ("infer-corrupt-parquet", command("infer", "--input", "{bad_parquet}", "--output", "{base}/i"),
     r"corpus\.parquet: cannot read as parquet"),
    ("decode-corrupt-gzip", command("decode", "--input", "{bad_gz}", "--output", "{base}/o.jsonl"),
     r"prompts\.jsonl\.gz: cannot read"),
    ("infer-corpus-missing", command("infer", "--input", "{base}/none.jsonl", "--output", "{base}/i"), r"corpus not found"),
    ("infer-output-inside-input", command("infer", "--input", "{corpus_dir}", "--output", "{corpus_dir}/out"),
     r"is inside --input"),
    ("infer-overwrite-mining", command("infer", "--input", "{good}", "--output", "{mined}", "--overwrite"),
     r"holds what `autojudge infer` did not write: mined data \(manifest\.json\)"),
    ("infer-output-is-file", command("infer", "--input", "{good}", "--output", "{afile}"), r"is a file, expected a folder"),
    ("infer-tokenizers-differ", command("infer", "--input", "{good}", "--output", "{base}/i", "--target", "toy:target",
                                        "--draft", "{other_tokenizer}"), r"use different tokenizers"),
    ("infer-judge-other-pair", command("infer", "--input", "{good}", "--output", "{base}/i", "--mode", "autojudge",
                                       "--judge", "{judge_other_pair}"), r"this judge does not fit the model pair"),
    # train
    ("train-corrupt-parquet", command("train", "--data", "{mined_corrupt}", "--out", "{base}/j"),
     r"shard-00001\.parquet: cannot read as Parquet"),
    ("train-data-missing", command("train", "--data", "{base}/nothing", "--out", "{base}/j"), r"folder not found"),
    ("train-out-is-file", command("train", "--data", "{mined}", "--out", "{afile}"), r"is a file, expected a folder"),
    ("train-val-fraction", command("train", "--data", "{mined}", "--out", "{base}/j", "--val-fraction", "1.5"),
     r"--val-fraction must be < 1"),
    ("train-manifest-list", command("train", "--data", "{manifest_list}", "--out", "{base}/j"), r"not a mining manifest"),
    # export
    ("export-out-is-data", command("export", "--data", "{mined}", "--out", "{mined}", "--overwrite"),
     r"is the same folder as --data"),
    ("export-out-contains-data", command("export", "--data", "{mined}", "--out", "{base}", "--overwrite"),
     r"contains --data"),
    ("export-out-inside-data", command("export", "--data", "{mined}", "--out", "{mined}/export"), r"is inside --data"),
    ("export-corrupt-parquet", command("export", "--data", "{mined_corrupt}", "--out", "{base}/x"),
     r"shard-00001\.parquet: cannot read as Parquet"),
    ("export-val-fraction", command("export", "--data", "{mined}", "--out", "{base}/x", "--val-fraction", "1"),
     r"--val-fraction must be < 1"),
    ("export-shard-rows-0", command("export", "--data", "{mined}", "--out", "{base}/x", "--max-shard-rows", "0"),
     r"--max-shard-rows must be >= 1"),
    # run, toy
    ("run-window-0", command("run", "--window", "0", "--out", "{base}/r"), r"--window must be >= 1"),
    ("run-compare-window-0", command("run", "--compare-windows", "8,0", "--out", "{base}/r"), r"--compare-windows must be >= 1"),
    ("run-max-drop", command("run", "--max-drop", "250", "--out", "{base}/r"), r"--max-drop must be <= 100"),
    ("run-out-is-file", command("run", "--out", "{afile}"), r"is a file, expected a folder"),
    ("toy-num-negative", command("toy", "--num", "-1", "--out", "{base}/t.jsonl"), r"--num must be >= 0"),
    ("toy-out-is-dir", command("toy", "--out", "{adir}"), r"is a folder, expected a file"),
    ("real-draft-layers-0", command("real", "draft", "--layers", "0"), r"--layers must be >= 1"),
    ("real-measure-window-0", command("real", "measure", "--windows", "8", "0"), r"--windows must be >= 1"),
]

MODEL_CASES: list[Case] = [  # these read the pair's tokenizers and configs first (no weights; a few seconds each)
    ("decode-prompt-too-long", command("decode", "--task", "toy", "--input", "{long}", "--output", "{base}/o.jsonl"),
     r"long\.jsonl: record 'long-1': prompt has \d+ tokens, the models' context is 256 tokens"),
    ("eval-prompt-too-long", command("eval", "--input", "{long}", "--out", "{base}/e"),
     r"problem 'long-1': prompt has \d+ tokens, the models' context is 256"),
    ("decode-judge-other-pair", judge_decode("judge_other_pair"), r"this judge does not fit the model pair"),
]


def run_cli(argv: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> tuple[int, str, str, float]:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    environment.pop("RAY_ADDRESS", None) if env is None or "RAY_ADDRESS" not in env else None
    environment.pop("AUTOJUDGE_DEBUG", None)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "autojudge.cli", *argv], capture_output=True, text=True,
                          env=environment, timeout=timeout, cwd=ROOT)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - start


def assert_clean_refusal(argv: list[str], pattern: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    rc, out, err, wall = run_cli(argv, env)
    assert rc != 0, f"accepted: {argv}\n{out}\n{err}"
    assert "Traceback" not in out + err, err
    assert re.search(pattern, err), f"message {pattern!r} not in:\n{err}"
    assert f"autojudge {argv[0]}: error:" in err
    assert "Started a local Ray instance" not in out + err  # refused before any cluster started
    return err, wall


SLOW_CASES = {"infer-tokenizers-differ", "infer-judge-other-pair", "eval-prompt-too-long", "decode-judge-other-pair"}
"""Cases that read a second tokenizer and the models' configs (5-20 s each on a loaded 2-core machine): `pytest -m slow`."""


def params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case[0], marks=[pytest.mark.slow] if case[0] in SLOW_CASES else []) for case in cases]


@pytest.mark.parametrize("case", params(CHEAP_CASES))
def test_bad_input_is_a_clear_error_before_any_work(world: dict[str, Path], case: Case) -> None:
    name, argv, pattern = case
    before = {p: p.stat().st_mtime_ns for p in world["mined"].rglob("*")}
    assert_clean_refusal(argv(world), pattern)
    assert {p: p.stat().st_mtime_ns for p in world["mined"].rglob("*")} == before  # the mined data is untouched
    assert not (world["base"] / "out").exists() and not (world["base"] / "m").exists()  # no output folder left


@pytest.mark.parametrize("case", params(MODEL_CASES))
def test_bad_input_found_from_the_tokenizers_and_configs_is_a_clear_error(world: dict[str, Path], case: Case) -> None:
    name, argv, pattern = case
    assert_clean_refusal(argv(world), pattern)
    assert not (world["base"] / "e").exists() and not (world["base"] / "o.jsonl").exists()


def test_unreachable_ray_address_fails_within_seconds(world: dict[str, Path]) -> None:
    argv = ["mine", *TOY, "--limit", "2", "--out", str(world["base"] / "m-ray")]
    _, wall = assert_clean_refusal(argv, r"cannot reach the Ray cluster at 127\.0\.0\.1:1", {"RAY_ADDRESS": "127.0.0.1:1"})
    assert wall < 30
    assert not (world["base"] / "m-ray").exists()
    argv = ["infer", "--input", str(world["good"]), "--output", str(world["base"] / "i-ray"), "--address", "127.0.0.1:1"]
    assert_clean_refusal(argv, r"cannot reach the Ray cluster at 127\.0\.0\.1:1")


def test_mine_with_a_missing_input_leaves_no_folder(world: dict[str, Path]) -> None:
    out = world["base"] / "m-missing"
    assert_clean_refusal(["mine", *TOY, "--task", "gsm8k", "--input", str(world["base"] / "none.jsonl"), "--out", str(out)],
                         r"none\.jsonl: file not found")
    assert not out.exists()


def test_export_onto_its_own_data_keeps_the_mined_data(world: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "mined"
    shutil.copytree(world["mined"], data)
    files = sorted(p.relative_to(data) for p in data.rglob("*"))
    for out in (data, tmp_path, data / "labels"):
        assert_clean_refusal(["export", "--data", str(data), "--out", str(out), "--overwrite"], r"--data")
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == files


# ----------------------------------------------------------------------------- in-process contracts


def test_non_utf8_line_is_an_error_row_where_the_command_keeps_error_rows(world: dict[str, Path]) -> None:
    from autojudge.errors import InputError
    from autojudge.pipeline.infer import parse_jsonl_file
    from autojudge.tasks import get_task

    problems = get_task("toy").load(str(world["utf8"]), strict=False)  # mine's reading
    assert [p.error is None for p in problems] == [True, False]
    assert "bad-utf8.jsonl:2: not valid UTF-8" in problems[1].error
    with pytest.raises(InputError, match=r"bad-utf8\.jsonl:2: not valid UTF-8"):
        get_task("toy").load(str(world["utf8"]), strict=True)  # decode's and eval's reading
    rows = parse_jsonl_file({"path": str(world["utf8"]), "bytes": world["utf8"].read_bytes()})  # infer's reading
    assert rows[0]["error"] is None and "not valid UTF-8" in rows[1]["error"] and rows[1]["question"] is None


def test_train_and_export_read_committed_shards_only(world: dict[str, Path], tmp_path: Path) -> None:
    """One responses shard deleted (the miner would re-mine those prompts): its labels are not read."""
    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.export import ExportConfig, export_dataset

    data = tmp_path / "mined"
    counts = write_mining_folder(data, shards_count=3)
    (data / "responses" / "shard-00001.parquet").unlink()
    committed = counts["shard-00000"] + counts["shard-00002"]
    assert len(read_mined(data)) == committed
    result = export_dataset(ExportConfig(data=data, out=tmp_path / "export"))
    assert result.counts["labels"]["total"] == committed
    assert f"Labelled mismatches: {committed};" in (tmp_path / "export" / "README.md").read_text()


def test_train_and_export_warn_when_the_mining_is_still_running(world: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "mined"
    shutil.copytree(world["mined"], data)
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps(dict(manifest, status="running")))
    rc, out, err, _ = run_cli(["export", "--data", str(data), "--out", str(tmp_path / "x")])
    assert rc == 0, err
    assert "autojudge export: warning:" in err and "still running" in err and "committed shards only" in err
    rc, out, err, _ = run_cli(["train", "--data", str(data), "--out", str(tmp_path / "j")])
    assert "autojudge train: warning:" in err and "still running" in err and "Traceback" not in out + err


def test_the_cli_turns_an_unexpected_exception_into_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from autojudge import cli
    from autojudge.commands import toy

    def explode(args: Any) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(toy, "run", explode)
    monkeypatch.delenv("AUTOJUDGE_DEBUG", raising=False)
    assert cli.main(["toy", "--model-path", "target"]) == 1
    err = capsys.readouterr().err
    assert "autojudge toy: error: unexpected ZeroDivisionError: division by zero" in err and "Traceback" not in err
