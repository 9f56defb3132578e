"""Model-pair loading: specs resolve, and a pair with different tokenizers is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from autojudge.models import ModelPairError, load_pair, resolve_spec, tokenizer_fingerprint


def save_tiny_model(folder: Path, words: list[str]) -> Path:
    """A 1-layer Llama with a word-level tokenizer over `words`, saved as an HF folder."""
    vocab = {word: i for i, word in enumerate(["<unk>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, eos_token_id=1,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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
    target = save_tiny_model(tmp_path / "t", ["a", "b", "c"])
    draft = save_tiny_model(tmp_path / "d", ["a", "b", "c"])
    pair = load_pair(str(target), str(draft))
    assert pair.target_id == str(target) and pair.tokenizer.pad_token_id is not None
    assert not pair.target.training and not pair.draft.training


def test_pair_with_different_tokenizers_is_refused(tmp_path: Path) -> None:
    target = save_tiny_model(tmp_path / "t", ["a", "b", "c"])
    draft = save_tiny_model(tmp_path / "d", ["a", "b", "x"])
    with pytest.raises(ModelPairError, match="use different tokenizers"):
        load_pair(str(target), str(draft))


def test_fingerprint_ignores_object_identity(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    folder = save_tiny_model(tmp_path / "t", ["a", "b"])
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
