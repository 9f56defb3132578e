"""Model-pair loading: specs resolve, and a pair with different tokenizers is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from autojudge.models import ModelPairError, load_pair, resolve_spec, tokenizer_fingerprint
from autojudge.testing import save_word_level_model


def test_resolve_specs(tmp_path: Path) -> None:
    folder, gguf = resolve_spec("toy:target")
    assert folder.endswith("toy/weights/target") and gguf is None
    with pytest.raises(ModelPairError, match="unknown toy model"):
        resolve_spec("toy:huge")
    with pytest.raises(ModelPairError, match="GGUF file not found"):
        resolve_spec(str(tmp_path / "m.gguf"))
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_spec(str(tmp_path / "m.gguf")) == (str(tmp_path), "m.gguf")


def test_pair_with_same_tokenizer_loads(tmp_path: Path) -> None:
    target = save_word_level_model(tmp_path / "t", ["a", "b", "c"])
    draft = save_word_level_model(tmp_path / "d", ["a", "b", "c"])
    pair = load_pair(str(target), str(draft))
    assert pair.target_id == str(target) and pair.tokenizer.pad_token_id is not None
    assert not pair.target.training and not pair.draft.training


def test_pair_with_different_tokenizers_is_refused(tmp_path: Path) -> None:
    target = save_word_level_model(tmp_path / "t", ["a", "b", "c"])
    draft = save_word_level_model(tmp_path / "d", ["a", "b", "x"])
    with pytest.raises(ModelPairError, match="use different tokenizers"):
        load_pair(str(target), str(draft))


def test_fingerprint_ignores_object_identity(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = save_word_level_model(tmp_path / "t", ["a", "b"])
    assert tokenizer_fingerprint(AutoTokenizer.from_pretrained(folder)) == tokenizer_fingerprint(
        AutoTokenizer.from_pretrained(folder)
    )


def test_missing_model_folder_is_clear(tmp_path: Path) -> None:
    from autojudge.models import load_model

    with pytest.raises(ModelPairError, match="cannot load model"):
        load_model(str(tmp_path / "absent"))


def test_folder_without_weights_is_clear(tmp_path: Path) -> None:
    from autojudge.models import load_model

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "nope"}')
    with pytest.raises(ModelPairError, match="cannot load model"):
        load_model(str(tmp_path / "empty"))
