"""The window that fits a pair: expected tokens per second per window (pure), and the measurement helper."""

from __future__ import annotations

import pytest
import torch

from autojudge.decode.engine.window import PairCosts, best_window, cycle_of, expected_tokens, measure_pair, window_table
from tests.helpers import noisy_copy, tiny_model

torch.set_num_threads(1)


def test_expected_tokens_is_one_plus_the_survival_sum():
    assert expected_tokens([], 4) == 1.0
    assert expected_tokens([0.5], 0) == 1.0
    assert expected_tokens([0.5], 3) == pytest.approx(1 + 0.5 + 0.25 + 0.125)  # the last entry repeats
    assert expected_tokens([1.0, 0.5, 0.0], 5) == pytest.approx(1 + 1 + 0.5)
    with pytest.raises(ValueError):
        expected_tokens([1.2], 2)


def test_table_values_by_hand():
    costs = PairCosts(target_s=0.010, draft_s=0.004, verify_s=(0.010, 0.011, 0.012))
    rows = window_table(costs, [0.5], [0, 1, 2, 4])
    assert [r.window for r in rows] == [0, 1, 2, 4]
    assert rows[0].tokens_per_s == pytest.approx(1 / 0.010)
    assert rows[1].seconds_per_cycle == pytest.approx(0.004 + 0.011)
    assert rows[2].tokens_per_s == pytest.approx(1.75 / (0.008 + 0.012))
    assert rows[3].seconds_per_cycle == pytest.approx(4 * 0.004 + 0.014)  # verify extrapolated along its last step
    assert costs.draft_ratio == pytest.approx(0.4)


def test_a_free_draft_with_perfect_acceptance_takes_the_longest_window():
    assert best_window(PairCosts(target_s=0.01, draft_s=0.0), [1.0], max_window=12) == 12


def test_an_expensive_draft_with_low_acceptance_takes_no_window():
    assert best_window(PairCosts(target_s=0.01, draft_s=0.01), [0.1], max_window=12) == 0
    assert best_window(PairCosts(target_s=0.01, draft_s=0.002), [0.05], max_window=12) == 0


def test_a_cheap_draft_with_falling_acceptance_takes_a_middle_window():
    costs = PairCosts(target_s=0.010, draft_s=0.002, verify_s=tuple(0.010 + 0.0005 * k for k in range(9)))
    chosen = best_window(costs, [0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1, 0.1], max_window=8)
    assert 2 <= chosen <= 5
    # overhead per cycle favours longer windows (it is paid once per cycle)
    assert best_window(PairCosts(0.010, 0.002, costs.verify_s, cycle_overhead_s=0.05), [0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1, 0.1], 8) >= chosen


def test_cycle_of_reads_window_and_accepted_length_from_the_counters():
    assert cycle_of(4, [], [0, 0, 1]) == (4, 2)
    assert cycle_of(3, [2, 1], [2, 1, 0, 1]) == (3, 3)
    with pytest.raises(ValueError):
        cycle_of(1, [1], [1])


def test_measure_pair_on_a_tiny_pair():
    target = tiny_model("llama", seed=0, layers=2)
    draft = noisy_copy(target, 0.2, seed=1)
    prompts = [[1, 5, 6, 7, 8], [1, 12, 13, 14]]
    profile = measure_pair(target, draft, prompts, window=4, max_new_tokens=24, eos_token_ids=[2], repeats=3)
    assert len(profile.costs.verify_s) == 5 and profile.costs.draft_s > 0
    assert 1 <= len(profile.acceptance) <= 4 and all(0 <= a <= 1 for a in profile.acceptance)
    assert 0 < profile.reached[0] <= profile.cycles  # a cycle at the budget's end may propose nothing
    assert profile.new_tokens > 0 and profile.cycles > 0
    rows = profile.table([0, 1, 2, 4])
    assert all(r.tokens_per_s > 0 for r in rows)
    assert 0 <= profile.best(8) <= 8


def test_decode_window_auto_chooses_a_window_and_decodes_exactly(tiny_pair_dirs, tmp_path, capsys):
    import json

    from autojudge.cli import main

    target_dir, draft_dir = tiny_pair_dirs
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Answer: {i} apples"}) + "\n" for i in range(3)))
    out = tmp_path / "out.jsonl"
    auto = ["decode", "--target", str(target_dir), "--draft", str(draft_dir), "--window", "auto",
            "--max-new-tokens", "10", "--input", str(prompts), "--output", str(out)]
    assert main(auto) == 0
    captured = capsys.readouterr()
    assert "window auto:" in captured.err and "chose" in captured.err
    chosen = int(captured.err.split("chose ")[1].split()[0])
    assert f"window {chosen}:" in captured.out
    fixed = tmp_path / "fixed.jsonl"
    assert main(auto[:6] + ["3"] + auto[7:-1] + [str(fixed)]) == 0
    token_ids = [json.loads(line)["token_ids"] for line in out.read_text().splitlines()]
    assert token_ids == [json.loads(line)["token_ids"] for line in fixed.read_text().splitlines()]
    with pytest.raises(SystemExit):
        main(auto[:6] + ["often"] + auto[7:])


def test_a_cheaper_greedy_cycle_can_make_plain_greedy_the_best_window():
    """Window 0's cycle has its own overhead: with speculative bookkeeping charged to it, speculation
    looks better than it is."""
    costs = dict(target_s=0.0007, draft_s=0.0004, verify_s=(0.0007, 0.0009, 0.00095, 0.00096, 0.001), cycle_overhead_s=0.0003)
    acceptance = [0.86, 0.74, 0.93, 0.77]
    assert best_window(PairCosts(**costs), acceptance, 4) > 0  # greedy charged the speculative overhead
    cheap_greedy = PairCosts(**costs, greedy_overhead_s=0.00002)
    assert best_window(cheap_greedy, acceptance, 4) == 0
    assert cheap_greedy.seconds(0) == pytest.approx(0.00072)
    assert cheap_greedy.seconds(2) == pytest.approx(2 * 0.0004 + 0.00095 + 0.0003)
