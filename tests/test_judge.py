"""Judge data, training and artifact: prompt-level split, informative features give AUC > 0.5,
tiny / one-class data fail clearly, save/load round trip without pickle, mismatched pair refused."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from autojudge.models import ModelPairError
from autojudge.pipeline.dataset import DataError, read_mined, split_by_prompt
from autojudge.judge import Judge, JudgeFormatError
from tests.helpers import write_mining_folder
from autojudge.pipeline.train import TrainConfig, format_report, pick_threshold, threshold_table, train_judge

TARGET_HIDDEN, DRAFT_HIDDEN = 16, 8  # the synthetic folder's hidden sizes (SYNTHETIC_MANIFEST)


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mining_folder(tmp_path_factory.mktemp("mined"))


@pytest.fixture(scope="module")
def trained(mined: Path) -> Judge:
    return train_judge(read_mined(mined), TrainConfig(seed=0))


def test_read_mined_shapes(mined: Path) -> None:
    data = read_mined(mined)
    assert data.h_target.shape == (len(data), TARGET_HIDDEN)
    assert data.h_draft.shape == (len(data), DRAFT_HIDDEN)
    assert data.features("DT").shape == (len(data), TARGET_HIDDEN)
    assert data.features("DD-DT").shape == (len(data), DRAFT_HIDDEN + TARGET_HIDDEN)
    assert data.important.dtype == bool and 0 < data.important.mean() < 1
    assert data.manifest["target"] == "synthetic:target"


def test_split_is_by_prompt_and_seeded(mined: Path) -> None:
    data = read_mined(mined)
    train_mask, val_mask = split_by_prompt(data.prompt_ids, data.important, 0.25, seed=3)
    assert not (train_mask & val_mask).any() and (train_mask | val_mask).all()
    train_prompts, val_prompts = set(data.prompt_ids[train_mask]), set(data.prompt_ids[val_mask])
    assert not train_prompts & val_prompts
    assert len(val_prompts) == 20  # a quarter of 80 prompts, not of rows
    for mask in (train_mask, val_mask):
        assert data.important[mask].any() and not data.important[mask].all()
    again, _ = split_by_prompt(data.prompt_ids, data.important, 0.25, seed=3)
    assert (again == train_mask).all()


def test_training_learns_informative_features(trained: Judge) -> None:
    metrics = trained.metrics
    assert metrics["val_roc_auc"] > 0.75
    assert metrics["val_pr_auc"] > metrics["val_important_rate"]
    assert trained.kind == "logreg" and trained.feature_setup == "DD-DT"
    assert metrics["chosen_C"] in TrainConfig().c_grid
    taus = [row["tau"] for row in trained.thresholds]
    assert taus == sorted(taus)
    recalls = [row["recall_important"] for row in trained.thresholds]
    accepts = [row["acceptance_rate"] for row in trained.thresholds]
    assert all(a >= b for a, b in zip(recalls, recalls[1:]))  # recall falls as tau rises
    assert all(a <= b for a, b in zip(accepts, accepts[1:]))  # acceptance rises
    chosen = next(row for row in trained.thresholds if row["tau"] == trained.default_threshold)
    assert chosen["recall_important"] >= 0.95
    assert "ROC AUC" in format_report(trained)


def test_lightgbm_and_dt_setup(mined: Path, tmp_path: Path) -> None:
    judge = train_judge(read_mined(mined), TrainConfig(model="lightgbm", feature_setup="DT"))
    assert judge.metrics["val_roc_auc"] > 0.7
    judge.save(tmp_path)
    assert (tmp_path / "model.txt").exists() and not (tmp_path / "weights.safetensors").exists()
    loaded = Judge.load(tmp_path)
    h_t = torch.randn(7, TARGET_HIDDEN)
    torch.testing.assert_close(loaded(h_t, torch.randn(7, DRAFT_HIDDEN)), judge(h_t, None))


def test_threshold_table_definitions() -> None:
    probs = np.array([0.1, 0.2, 0.6, 0.9])
    important = np.array([False, True, False, True])
    (row,) = threshold_table(probs, important, (0.5,))
    assert row["recall_important"] == 0.5  # 0.9 rejected, 0.2 accepted
    assert row["acceptance_rate"] == 0.5  # 0.1 and 0.2 accepted
    assert row["accepted_unimportant_rate"] == 0.5
    table = threshold_table(probs, important, (0.15, 0.5, 0.95))
    assert pick_threshold(table, 1.0) == 0.15
    assert pick_threshold(table, 0.5) == 0.5


def test_round_trip_same_probabilities(trained: Judge, tmp_path: Path) -> None:
    from autojudge.setup import DEFAULT_WINDOW, default_window

    assert trained.default_window is None and default_window(trained) == DEFAULT_WINDOW == default_window(None)
    judge = copy.deepcopy(trained)  # the fixture is shared by the module
    judge.set_default_threshold(0.25, "a test sweep", window=12)
    judge.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["judge.json", "weights.safetensors"]
    loaded = Judge.load(tmp_path)
    assert (loaded.default_threshold, loaded.threshold_source, loaded.default_window) == (0.25, "a test sweep", 12)
    assert default_window(loaded) == 12
    h_t, h_d = torch.randn(11, TARGET_HIDDEN), torch.randn(11, DRAFT_HIDDEN)
    torch.testing.assert_close(loaded(h_t, h_d), trained(h_t, h_d), rtol=0, atol=1e-6)
    numpy_probs = loaded.predict_hidden(h_t.numpy(), h_d.numpy())
    np.testing.assert_allclose(numpy_probs, trained(h_t, h_d).numpy(), atol=1e-5)
    assert trained.default_threshold != 0.25 and trained.default_window is None  # the copy changed, not the fixture
    assert loaded.thresholds == trained.thresholds
    assert loaded.pair == trained.pair
    assert loaded.metrics["val_roc_auc"] == trained.metrics["val_roc_auc"]


def test_no_pickle_anywhere(trained: Judge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pickle must not be used for the judge artifact")

    for name in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch, "save", refuse)
    trained.save(tmp_path)
    Judge.load(tmp_path)(torch.randn(2, TARGET_HIDDEN), torch.randn(2, DRAFT_HIDDEN))
    for path in tmp_path.iterdir():
        assert path.suffix in (".json", ".safetensors", ".txt")
        assert not path.read_bytes().startswith(b"\x80")  # pickle protocol header


@pytest.mark.parametrize(
    "change, message",
    [
        ({"target_id": "other/target"}, "target model 'other/target'"),
        ({"draft_id": "other/draft"}, "draft model 'other/draft'"),
        ({"tokenizer_fingerprint": "ffffffffffffffff"}, "tokenizer fingerprint ffffffffffffffff"),
        ({"target_hidden": 32}, "target hidden size 32"),
        ({"draft_hidden": 4}, "draft hidden size 4"),
    ],
)
def test_mismatched_pair_is_refused(trained: Judge, change: dict, message: str) -> None:
    pair = {
        "target_id": "synthetic:target", "draft_id": "synthetic:draft", "tokenizer_fingerprint": "0123456789abcdef",
        "target_hidden": TARGET_HIDDEN, "draft_hidden": DRAFT_HIDDEN,
    }
    trained.check_pair(**pair)  # the right pair passes
    with pytest.raises(ModelPairError, match="does not fit the model pair") as err:
        trained.check_pair(**dict(pair, **change))
    assert message in str(err.value)


def test_wrong_feature_width_is_refused(trained: Judge) -> None:
    with pytest.raises(ModelPairError, match="width 16"):
        trained(torch.randn(3, 32), torch.randn(3, DRAFT_HIDDEN))


def test_toy_spec_and_its_folder_are_the_same_model(trained: Judge, tmp_path: Path) -> None:
    from autojudge.models import TOY_WEIGHTS
    from autojudge.judge import _same_model

    assert _same_model("toy:target", str(TOY_WEIGHTS / "target"))
    assert not _same_model("toy:target", "toy:draft")


def test_one_class_data_fails_clearly(tmp_path: Path) -> None:
    folder = write_mining_folder(tmp_path, num_prompts=30, important_rate=0.0)
    with pytest.raises(DataError, match="all .* mismatches are unimportant"):
        train_judge(read_mined(folder))


def test_tiny_data_fails_clearly(tmp_path: Path) -> None:
    folder = write_mining_folder(tmp_path, num_prompts=2, shards=1)
    with pytest.raises(DataError, match="mine more prompts"):
        train_judge(read_mined(folder))


def test_empty_or_missing_folder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no label shards"):
        read_mined(tmp_path)
    with pytest.raises(JudgeFormatError, match="not a judge folder"):
        Judge.load(tmp_path)


def test_train_command_writes_artifact(mined: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from autojudge.cli import main

    out = tmp_path / "judge"
    assert main(["train", "--data", str(mined), "--out", str(out), "--features", "DT"]) == 0
    printed = capsys.readouterr().out
    assert "validation ROC AUC" in printed and "| tau |" in printed
    assert (out / "train_report.md").exists()
    assert Judge.load(out).feature_setup == "DT"
    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(out)]) == 2

