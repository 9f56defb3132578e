"""Model-pair loading: specs resolve, and a pair with different tokenizers is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from autojudge.models import ModelPairError, load_pair, resolve_spec, tokenizer_fingerprint
from tests.helpers import save_word_level_model


def test_resolve_specs(tmp_path: Path) -> None:
    folder, gguf = resolve_spec("toy:target")
    assert folder.endswith("toy/weights/target") and gguf is None
    with pytest.raises(ModelPairError, match="unknown toy model"):
        resolve_spec("toy:huge")
    with pytest.raises(ModelPairError, match="GGUF file not found"):
        resolve_spec(str(tmp_path / "m.gguf"))
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_spec(str(tmp_path / "m.gguf")) == (str(tmp_path), "m.gguf")


def test_a_model_family_resolves_through_the_resolver_its_package_registered(tmp_path: Path, monkeypatch) -> None:
    """The generic loader knows folders, hub ids, .gguf files and the toy pair; `family:NAME` goes to the
    resolver a package registered (`model_specs`): `autojudge.real` registers smollm2 on import."""
    import ast
    import inspect

    from autojudge import model_specs, models

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(models))) if isinstance(node, ast.ImportFrom)}
    assert not any(str(name).startswith("autojudge.real") for name in imported)  # no family in the generic loader
    assert "smollm2" in model_specs.families()
    monkeypatch.setattr(model_specs, "_RESOLVERS", dict(model_specs._RESOLVERS))
    model_specs.register_spec_resolver("mine", lambda spec: str(tmp_path / spec.split(":", 1)[1]))
    assert resolve_spec("mine:small@bf16") == (str(tmp_path / "small"), None)
    assert resolve_spec("other:x") == ("other:x", None)  # no family registered: a hub id as given

    def unavailable(spec: str) -> str:
        raise ModelPairError(f"{spec}: not built")

    model_specs.register_spec_resolver("mine", unavailable)
    with pytest.raises(ModelPairError, match="mine:small: not built"):
        resolve_spec("mine:small")


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


def test_a_dtype_suffix_loads_the_model_in_that_dtype_and_exact_decoding_stays_exact() -> None:
    """`SPEC@bf16`: a bfloat16 draft; the float32 target still decides every token, so exact mode equals
    greedy `generate` of the target."""
    import torch

    from autojudge.decode.engine import EngineCore, RequestSettings
    from tests.helpers import greedy_reference

    assert resolve_spec("toy:draft@bf16") == resolve_spec("toy:draft")
    pair = load_pair("toy:target", "toy:draft@bf16")
    assert pair.draft.dtype == torch.bfloat16 and pair.target.dtype == torch.float32
    prompts = [pair.tokenizer.encode(q) for q in ("Tom has 3 apples and buys 5 more. How many apples?", "Sam has 12 pens.")]
    engine = EngineCore.for_pair(pair, default_window=4, max_batch=2)
    results = engine.generate(prompts, RequestSettings(max_new_tokens=40))
    eos = pair.tokenizer.eos_token_id
    assert [r.token_ids for r in results] == greedy_reference(pair.target, prompts, 40, eos=eos, pad_token_id=pair.tokenizer.pad_token_id)
    assert sum(r.metrics.target_calls for r in results) < sum(len(r.token_ids) for r in results)  # it did speculate


def test_an_unknown_dtype_suffix_is_named() -> None:
    with pytest.raises(ModelPairError, match="unknown dtype suffix @int3"):
        resolve_spec("toy:draft@int3")
