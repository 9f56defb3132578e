"""One default per concept (`autojudge.setup`): every command, config class and pipeline takes the
window and the budget from there, and `autojudge run` overrides them only through its presets."""

from __future__ import annotations

import inspect

import pytest

from autojudge import setup
from autojudge.cli import build_parser


def test_the_config_classes_take_the_project_defaults():
    from autojudge.actors.decoder import DecodeStageConfig
    from autojudge.actors.engine_process import EngineConfig
    from autojudge.actors.server import ReplicaConfig
    from autojudge.pipeline.evaluate import EvalConfig
    from autojudge.pipeline.mine import MineConfig
    from autojudge.pipeline.run import RunConfig

    nested = [DecodeStageConfig().decoding, ReplicaConfig().decoding, EngineConfig().decoding, MineConfig().decoding]
    assert all(config == setup.DecodingConfig() for config in nested)  # one nested config, not repeated fields
    assert RunConfig().decoding == setup.DecodingConfig(window=setup.DEFAULT_WINDOW)  # the run fixes its window
    assert setup.DecodingConfig().window_for(None) == EvalConfig().window == setup.DEFAULT_WINDOW
    from autojudge.decode.engine.core import EngineCore, RequestSettings

    budgets = {config.max_new_tokens for config in (setup.DecodingConfig(), EvalConfig(), RequestSettings())}
    assert inspect.signature(EngineCore).parameters["default_window"].default == setup.DEFAULT_WINDOW
    assert inspect.signature(EngineCore.for_pair).parameters["default_window"].default == setup.DEFAULT_WINDOW
    assert budgets == {setup.DEFAULT_MAX_NEW_TOKENS}


@pytest.mark.parametrize("argv,budget", [
    (["decode", "--input", "i", "--output", "o"], "max_new_tokens"), (["infer", "--input", "i", "--output", "o"], "max_new_tokens"),
    (["eval", "--out", "o"], "max_new_tokens"), (["serve"], "max_tokens"),
    (["mine", "--target", "t", "--draft", "d", "--out", "o"], "max_new_tokens"),
    (["hogwild", "--input", "i", "--output", "o"], "max_new_tokens"),
])  # fmt: skip
def test_every_command_defaults_to_the_project_budget_and_window(argv, budget):
    args = build_parser().parse_args(argv)
    config = setup.config_from_args(args, budget=budget)
    assert config.max_new_tokens == setup.DEFAULT_MAX_NEW_TOKENS
    assert config.window is None and config.window_for(None) == setup.DEFAULT_WINDOW  # else the judge's


def test_autojudge_run_takes_its_decoding_settings_from_a_preset():
    from autojudge.commands.run import PRESETS, build_config
    from autojudge.pipeline.run import TOY_RUN

    toy = build_config(build_parser().parse_args(["run"]))
    assert (toy.decoding.window, toy.decoding.max_new_tokens) == (TOY_RUN["window"], TOY_RUN["max_new_tokens"]) == (12, 112)  # make run's headline
    real = build_config(build_parser().parse_args(["run", "--preset", "smollm2-gsm8k", "--window", "5"]))
    assert (real.decoding.window, real.decoding.max_new_tokens) == (5, PRESETS["smollm2-gsm8k"]["max_new_tokens"])  # a flag beats the preset


def test_a_pair_not_given_is_the_judges_else_the_default():
    args = build_parser().parse_args(["eval", "--out", "o", "--draft", "mine:draft"])
    judge_pair = {"target_id": "judge:target", "draft_id": "judge:draft"}
    assert (setup.config_from_args(args, judge_pair).target, setup.config_from_args(args, judge_pair).draft) == (
        "judge:target", "mine:draft")
    assert setup.config_from_args(args).target == setup.DEFAULT_TARGET


def test_the_rule_options_become_one_parameter_and_are_checked():
    from autojudge.errors import InputError

    def config(*extra: str) -> setup.DecodingConfig:
        return setup.config_from_args(build_parser().parse_args(["decode", "--input", "i", "--output", "o", *extra]))

    assert config("--mode", "typical", "--epsilon", "0.2").threshold == 0.2
    assert config("--mode", "fly", "--fly-entropy", "0.5", "--fly-window", "3").request_fields()["threshold"] == 0.5
    assert config("--mode", "autojudge", "--judge", "j", "--threshold", "0.4").threshold == 0.4
    with pytest.raises(InputError, match="mode autojudge needs --judge"):
        setup.check_config(config("--mode", "autojudge"))
    with pytest.raises(InputError, match="--window must be >= 1, got 0"):
        setup.check_config(config("--window", "0"))
    setup.check_config(config("--window", "0"), least_window=0)  # serve: a window of 0 is no speculation
    with pytest.raises(InputError, match="--fly-window 6 needs --window larger than it"):
        setup.check_config(config("--mode", "fly", "--window", "4"))
