"""The miner: the fast search gives the plain algorithm's labels; the job writes shards,
handles bad input, and resumes after a kill without duplicates or losses."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import noisy_copy, tiny_model
from autojudge.pipeline import shards
from autojudge.pipeline.mine import MineConfig, mine
from autojudge.setup import DecodingConfig
from autojudge.decode.mining.search import plain_search
from autojudge.decode.mining.lookahead import BatchedSearcher, LookaheadSettings, SearchJob, realign, settings_for

REPO = Path(__file__).resolve().parents[1]
TOY_TOKENIZER = REPO / "autojudge" / "toy" / "weights" / "target"
EOS = 2


class ParityEvaluator:
    """Test-only E: the outcome is the parity of the last token (both outcomes happen with random models)."""

    def answer(self, response_ids: list[int]) -> int | None:
        return response_ids[-1] % 2 if response_ids else None

    def same(self, response_ids: list[int], reference: int | None) -> bool:
        return self.answer(response_ids) == reference


def tiny_pair(vocab_size: int = 96, noise: float = 0.1):
    """A random target (EOS made likely enough to happen) and a noisy copy as draft."""
    target = tiny_model("llama", seed=0, vocab_size=vocab_size, hidden_size=32)
    with torch.no_grad():
        target.lm_head.weight[EOS] += 0.5 * target.lm_head.weight.std()
    return target, noisy_copy(target, scale=noise, seed=1)


def label_keys(result) -> list[tuple[int, int, int, bool]]:
    return [(label.position, label.target_token, label.draft_token, label.important) for label in result.labels]


COMPUTE_BOUND = LookaheadSettings(min_guess=0, draft_proposals=0)  # what `settings_for` picks for a real model


@pytest.mark.parametrize("noise,batch_size,settings", [(0.1, 4, None), (0.2, 3, None), (0.1, 4, COMPUTE_BOUND), (0.2, 3, COMPUTE_BOUND)],
                         ids=["toy-guessing-1", "toy-guessing-2", "compute-bound-1", "compute-bound-2"])
def test_fast_search_equals_plain_algorithm(noise: float, batch_size: int, settings: LookaheadSettings | None) -> None:
    torch.set_num_threads(1)
    target, draft = tiny_pair(noise=noise)
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 96) for _ in range(rng.randrange(3, 12))] for _ in range(10)]
    budget = 32
    plain = [plain_search(target, draft, p, ParityEvaluator(), budget, [EOS], 0) for p in prompts]
    searcher = BatchedSearcher(target, draft, [EOS], 0, batch_size=batch_size, settings=settings)
    fast = dict(searcher.run([SearchJob(i, p, ParityEvaluator(), budget) for i, p in enumerate(prompts)]))
    assert sum(len(r.labels) for r in plain) > 20
    assert {label.important for r in plain for label in r.labels} == {True, False}
    assert any(EOS in r.initial_response for r in plain)  # the EOS paths are exercised
    for index, expected in enumerate(plain):
        got = fast[index]
        assert label_keys(got) == label_keys(expected)
        assert got.initial_response == expected.initial_response
        assert got.final_response == expected.final_response
        assert got.target_answer == expected.target_answer
        for a, b in zip(got.labels, expected.labels):
            torch.testing.assert_close(a.h_target, b.h_target, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(a.h_draft, b.h_draft, atol=1e-4, rtol=1e-4)


def test_shared_prefix_gives_the_labels_of_a_full_prefill() -> None:
    """Prompts behind one common header (a few-shot prefix): the searcher that copies the header's
    keys/values into each row finds the labels and responses of the plain algorithm, and feeds fewer tokens."""
    torch.set_num_threads(1)
    target, draft = tiny_pair(noise=0.15)
    rng = random.Random(3)
    header = [rng.randrange(3, 96) for _ in range(20)]
    prompts = [header + [rng.randrange(3, 96) for _ in range(rng.randrange(1, 8))] for _ in range(8)]
    prompts.append(header[:5] + [7, 8])  # shares only part of the header
    budget = 24
    plain = [plain_search(target, draft, p, ParityEvaluator(), budget, [EOS], 0) for p in prompts]
    assert sum(len(r.labels) for r in plain) > 10
    shared = BatchedSearcher(target, draft, [EOS], 0, batch_size=3, shared_prefix=header)
    full = BatchedSearcher(target, draft, [EOS], 0, batch_size=3)
    jobs = [SearchJob(i, p, ParityEvaluator(), budget) for i, p in enumerate(prompts)]
    got, reference = dict(shared.run(jobs)), dict(full.run(jobs))
    for index, expected in enumerate(plain):
        assert label_keys(got[index]) == label_keys(expected) == label_keys(reference[index])
        assert got[index].final_response == expected.final_response
        for a, b in zip(got[index].labels, expected.labels):
            torch.testing.assert_close(a.h_target, b.h_target, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(a.h_draft, b.h_draft, atol=1e-4, rtol=1e-4)
    assert shared.shared_prefix is not None and shared.shared_prefix.loaded_tokens >= 8 * 20 * 2 - 2 * 20
    saved = full.counters.target_tokens - shared.counters.target_tokens
    assert saved >= 7 * 20  # every row after the first skipped the header (the first computed it once)


def test_real_sized_targets_verify_no_guess_after_a_rejection() -> None:
    """`settings_for`: a target of real size (a forward pays per token fed) gets the compute-bound guessing,
    a toy-sized one the defaults (a forward pays per call)."""
    assert settings_for(tiny_model("llama", seed=0, hidden_size=32)) == LookaheadSettings()
    big = tiny_model("llama", seed=0, vocab_size=50_000, hidden_size=256, layers=1)  # 25.6M parameters, all but 0.8M the embeddings and head
    assert settings_for(big) == COMPUTE_BOUND
    assert BatchedSearcher(big, big, [EOS], 0).settings == COMPUTE_BOUND


class EveryChangeMatters(ParityEvaluator):
    """Test-only E: every regeneration counts as a changed answer, so every mismatch is important and the
    search never leaves the target's greedy path."""

    def same(self, response_ids: list[int], reference: int | None) -> bool:
        return False


def test_the_engine_hands_the_judge_the_features_mining_stored() -> None:
    """Train/serve: wherever the engine judges a mismatch on the target's greedy path, the judge gets the
    hidden states the search stored for that mismatch (at window 1 the engine proposes at every position
    but the bonus token's)."""
    from autojudge.decode.engine import EngineCore, RequestSettings

    torch.set_num_threads(1)
    target, draft = tiny_pair(noise=0.4)
    rng = random.Random(3)
    compared = 0
    for _ in range(6):
        prompt = [rng.randrange(3, 96) for _ in range(rng.randrange(3, 12))]
        result = plain_search(target, draft, prompt, EveryChangeMatters(), 32, [EOS], 0)
        labels = {label.position: label for label in result.labels}
        response = result.initial_response
        with torch.no_grad():
            drafts = draft(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1].argmax(-1).tolist()
        judged, position = [], 0  # the engine's cycles at window 1, never accepting: +1 after a mismatch, +2 after a match
        while position < min(len(response), 32 - 1):  # the last token of the budget is never drafted
            if drafts[position] != response[position]:
                judged.append(position)
                position += 1
            else:
                position += 2
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def judge(h_t: torch.Tensor, h_d: torch.Tensor) -> torch.Tensor:
            seen.extend(zip(h_t.clone(), h_d.clone()))
            return torch.ones(h_t.shape[0])  # every mismatch important: the engine stays on the greedy path

        engine = EngineCore(target, draft, judge=judge, eos_token_ids=[EOS], default_window=1)
        output = engine.generate([prompt], RequestSettings(max_new_tokens=32, mode="autojudge", threshold=0.5))[0]
        assert output.token_ids == result.initial_response
        assert len(seen) == len(judged)
        for position, (h_t, h_d) in zip(judged, seen):
            if position not in labels:
                continue
            torch.testing.assert_close(h_t, labels[position].h_target, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(h_d, labels[position].h_draft, atol=1e-4, rtol=1e-4)
            compared += 1
    assert compared >= 10


def test_realign_prefers_longest_nearest_ngram() -> None:
    settings = LookaheadSettings(max_ngram=3, realign_distance=8)
    old = [10, 11, 12, 13, 14, 15, 12, 13]
    assert realign([7, 12, 13], old, expected=3, settings=settings) == (3, 2)
    assert realign([99, 14], old, expected=2, settings=settings) == (4, 1)
    assert realign([98, 99], old, expected=5, settings=settings) == (5, 0)  # nothing matches: keep alignment


# ---------------------------------------------------------------------------------------
# The job: shards, bad input, resume
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random target/draft saved as HF folders with the toy tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("pair")
    tokenizer = AutoTokenizer.from_pretrained(TOY_TOKENIZER)
    target, draft = tiny_pair(vocab_size=len(tokenizer), noise=0.1)
    for name, model in (("target", target), ("draft", draft)):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
    return folder


def config_for(pair_dir: Path, out: Path, **overrides) -> MineConfig:
    pair = {"target": str(pair_dir / "target"), "draft": str(pair_dir / "draft"), "max_new_tokens": 24}
    pair.update({key: overrides.pop(key) for key in list(overrides) if key in pair})
    settings = dict(task="toy", out=str(out), limit=6, workers=0, batch_size=4, progress=False)
    settings.update(overrides)
    return MineConfig(decoding=DecodingConfig(**pair), **settings)


def check_exactly_once(out: Path, expected_ids: set[str]) -> None:
    responses = shards.read_responses(out)
    ids = responses.column("prompt_id").to_pylist()
    assert sorted(ids) == sorted(expected_ids)  # every prompt, once
    labels = shards.read_labels(out, ["prompt_id", "position"]).to_pylist()
    keys = [(row["prompt_id"], row["position"]) for row in labels]
    assert len(keys) == len(set(keys))
    per_prompt = dict(zip(ids, responses.column("num_labels").to_pylist()))
    for prompt_id, count in per_prompt.items():
        assert sum(1 for k in keys if k[0] == prompt_id) == count


def test_mine_writes_shards_manifest_and_bad_input_rows(pair_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    prompts = tmp_path / "prompts.jsonl"
    records = [
        {"id": "ok-1", "question": "Tom has 3 apples. He buys 4 more apples. How many apples does he have?"},
        {"id": "no-text", "answer": "#### 3"},
        {"id": "empty", "question": "   "},
        {"id": "long", "question": " ".join(["Tom buys 12 apples."] * 150)},
        {"id": "ok-2", "prompt": "Sam has 5 cards."},
    ]
    prompts.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    out = mine(config_for(pair_dir, tmp_path / "out", input=str(prompts), limit=None))
    responses = {r["prompt_id"]: r for r in shards.read_responses(out).to_pylist()}
    assert set(responses) == {"ok-1", "no-text", "empty", "long", "ok-2", "line-6"}
    assert "missing field" in responses["no-text"]["error"]
    assert "empty" in responses["empty"]["error"]
    assert "too long" in responses["long"]["error"] and "context" in responses["long"]["error"]
    assert "not valid JSON" in responses["line-6"]["error"]
    for good in ("ok-1", "ok-2"):
        row = responses[good]
        assert row["error"] is None and row["initial_response_ids"] and row["prompt_token_ids"]
    labels = shards.read_labels(out)
    assert labels.num_rows == responses["ok-1"]["num_labels"] + responses["ok-2"]["num_labels"] > 0
    assert len(labels.column("h_target").to_pylist()[0]) == 32
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"prompts": 6, "labels": labels.num_rows,
                                  "important": sum(labels.column("important").to_pylist()), "errors": 4}
    assert manifest["target_hidden_size"] == 32 and manifest["settings"]["max_new_tokens"] == 24
    # same command again: nothing new, nothing lost
    mine(config_for(pair_dir, tmp_path / "out", input=str(prompts), limit=None))
    check_exactly_once(out, set(responses))
    # a different budget on the same folder is refused
    from autojudge.errors import InputError

    with pytest.raises(InputError, match="max_new_tokens"):
        mine(config_for(pair_dir, tmp_path / "out", input=str(prompts), limit=None, max_new_tokens=30))


def test_plain_method_matches_fast_through_the_job(pair_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    fast = mine(config_for(pair_dir, tmp_path / "fast", limit=4))
    plain = mine(config_for(pair_dir, tmp_path / "plain", limit=4, method="plain"))
    columns = ["prompt_id", "position", "target_token", "draft_token", "important"]
    rows = lambda out: sorted(tuple(r.values()) for r in shards.read_labels(out, columns).to_pylist())  # noqa: E731
    assert rows(fast) == rows(plain) and rows(fast)


def test_each_label_was_mined_in_the_final_response_up_to_it(pair_dir: Path, tmp_path: Path) -> None:
    """The semi-greedy search never changes a response before a mismatch it has decided, so a label at position
    p was mined in the context prompt + final_response[:p] (what bench/rules_on_labels.py rebuilds): there the
    target's greedy token is the label's target token, the draft's is its draft token, and the final response
    holds the target's token where the mismatch was important and the draft's where it was not."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    out = mine(config_for(pair_dir, tmp_path / "out", limit=4))
    responses = {row["prompt_id"]: row for row in shards.read_responses(out).to_pylist()}
    labels = shards.read_labels(out, ["prompt_id", "position", "target_token", "draft_token", "important"]).to_pylist()
    assert labels and {row["important"] for row in labels} == {True, False}
    target, draft = (AutoModelForCausalLM.from_pretrained(pair_dir / name).eval() for name in ("target", "draft"))
    for prompt_id, response in responses.items():
        prompt, final = response["prompt_token_ids"], response["final_response_ids"]
        ids = torch.tensor([prompt + final])
        with torch.no_grad():
            target_next, draft_next = target(ids).logits[0].argmax(-1), draft(ids).logits[0].argmax(-1)
        for row in (row for row in labels if row["prompt_id"] == prompt_id):
            at = len(prompt) + row["position"]  # the token at `at` is predicted by the logits at at - 1
            assert (int(target_next[at - 1]), int(draft_next[at - 1])) == (row["target_token"], row["draft_token"])
            assert final[row["position"]] == (row["target_token"] if row["important"] else row["draft_token"])


def run_until_killed(command: list[str], out: Path, timeout: float = 50.0) -> None:
    """Start the job, kill -9 it once at least one shard is committed (and before it ends)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and process.poll() is None:
            if len(list((out / "responses").glob("*.parquet"))) >= 1:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the job finished before it could be killed: make it longer"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def mine_command(pair_dir: Path, out: Path, workers: int, limit: int) -> list[str]:
    return [sys.executable, "-m", "autojudge.cli", "mine", "--task", "toy", "--limit", str(limit),
            "--target", str(pair_dir / "target"), "--draft", str(pair_dir / "draft"), "--out", str(out),
            "--workers", str(workers), "--batch-size", "2", "--chunk-size", "2", "--max-new-tokens", "24",
            "--no-progress"]


def test_kill_and_resume_labels_every_prompt_once(pair_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = mine_command(pair_dir, out, workers=0, limit=10)
    run_until_killed(command, out)
    finished_before = shards.finished_prompt_ids(out)
    assert 0 < len(finished_before) < 10
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=120)
    check_exactly_once(out, {f"toy-1-{i}" for i in range(10)})
    assert json.loads((out / "manifest.json").read_text())["counts"]["prompts"] == 10


@pytest.mark.slow
def test_kill_and_resume_with_ray_workers(pair_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = mine_command(pair_dir, out, workers=2, limit=24)
    run_until_killed(command, out, timeout=120)
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, timeout=300)
    check_exactly_once(out, {f"toy-1-{i}" for i in range(24)})


def test_finished_only_skips_prompts_whose_answer_hits_the_budget() -> None:
    """A response cut by the budget has no final answer to keep: with finished_only both searches give
    it no labels (and mark it), and the prompts that end keep exactly their labels."""
    torch.set_num_threads(1)
    target, draft = tiny_pair(noise=0.15)
    rng = random.Random(5)
    prompts = [[rng.randrange(3, 96) for _ in range(rng.randrange(3, 10))] for _ in range(12)]
    budget = 20
    everything = [plain_search(target, draft, p, ParityEvaluator(), budget, [EOS], 0) for p in prompts]
    plain = [plain_search(target, draft, p, ParityEvaluator(), budget, [EOS], 0, finished_only=True) for p in prompts]
    searcher = BatchedSearcher(target, draft, [EOS], 0, batch_size=4, finished_only=True)
    fast = dict(searcher.run([SearchJob(i, p, ParityEvaluator(), budget) for i, p in enumerate(prompts)]))
    ended = [EOS in r.initial_response for r in everything]
    assert any(ended) and not all(ended)
    for index, (full, kept) in enumerate(zip(everything, plain)):
        assert kept.unfinished == (not ended[index]) == fast[index].unfinished
        assert label_keys(kept) == label_keys(fast[index]) == (label_keys(full) if ended[index] else [])
