"""The decode replica: a callable class for `Dataset.map_batches` that holds one loaded pair.

Ray Data creates `concurrency` instances (each with `num_gpus` / `num_cpus` of its own);
`__init__` loads the target, the draft (and judge) and builds the engine core once
(`load_decode_state`), and every call decodes one batch of rows with `decode_rows`, a plain
function over row dicts (tested without a cluster) that puts each row's failure in its own
`error` field instead of failing the batch. The driver is `autojudge/pipeline/infer.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from autojudge.errors import InputError
from autojudge.setup import DecodingConfig


@dataclass
class DecodeStageConfig:
    """What one decode replica loads and how it decodes (shipped to every actor)."""

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """The pair, the judge, the rule and its parameter, the window and the budget (`setup.DecodingConfig`;
    `autojudge infer` ships the one `setup.resolve_setup` checked)."""
    batch_size: int = 16
    """Most rows decoded together by a replica's engine core."""
    task: str = "gsm8k"
    """Task that formats `question` rows (chat template); `prompt` rows are used as raw text."""
    stop: tuple[str, ...] = ()
    """Stop strings."""
    max_prompt_tokens: int | None = None
    """Longer prompts become error rows (default: the models' context length minus the budget)."""
    device: str = "auto"
    """torch device of a replica; auto = cuda when the replica has a GPU, else cpu."""
    threads: int | None = None
    """torch CPU threads per replica (default: the replica's CPU count)."""


@dataclass
class DecodeState:
    """What a replica holds: the loaded pair, the engine, the task that formats questions."""

    config: DecodeStageConfig
    pair: Any
    engine: Any
    settings: Any
    task: Any
    max_prompt_tokens: int
    replica: str



def output_schema() -> Any:
    """Schema of every output batch (fixed, so shards always concatenate)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()), ("source", pa.string()), ("text", pa.string()),
            ("token_ids", pa.list_(pa.int32())), ("num_prompt_tokens", pa.int32()),
            ("stop_reason", pa.string()), ("new_tokens", pa.int32()), ("target_calls", pa.int32()),
            ("draft_calls", pa.int32()), ("tokens_per_target_call", pa.float64()),
            ("accepted_lengths", pa.list_(pa.int32())), ("wall_s", pa.float64()),
            ("replica", pa.string()), ("error", pa.string()),
        ]
    )  # fmt: skip


# --------------------------------------------------------------------------- decoding


def load_decode_state(config: DecodeStageConfig, num_gpus: float = 0.0) -> DecodeState:
    """Load the pair, the rule (and judge) and the engine; done once per replica."""
    import socket

    import torch

    from autojudge.decode.engine import EngineCore, RequestSettings
    from autojudge.models import load_pair, model_context
    from autojudge.tasks import get_task

    device = config.device
    if device == "auto":
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(max(1, config.threads or 1))
    decoding = config.decoding
    pair = load_pair(decoding.target, decoding.draft, device=device)
    judge = None
    if decoding.mode == "autojudge":
        if not decoding.judge:
            raise InputError("mode autojudge needs --judge JUDGE_DIR (from `autojudge train`)")
        from autojudge.judge import Judge

        judge = Judge.load(decoding.judge)
        judge.check_model_pair(pair, decoding.same_pair)
    engine = EngineCore.for_pair(pair, judge=judge, default_window=decoding.window_for(judge), max_batch=max(1, config.batch_size))
    settings = RequestSettings(**decoding.request_fields(), stop_strings=tuple(config.stop))
    engine.rule_for(settings)  # a bad mode or threshold fails here, once per replica
    max_prompt = config.max_prompt_tokens
    if max_prompt is None:
        max_prompt = max(1, min(model_context(pair.target), model_context(pair.draft)) - decoding.max_new_tokens)
    replica = f"{socket.gethostname()}:{os.getpid()}"
    return DecodeState(config, pair, engine, settings, get_task(config.task), max_prompt, replica)


def _error_row(row: dict[str, Any], error: str, replica: str, num_prompt_tokens: int | None = None) -> dict[str, Any]:
    return {
        "id": row.get("id"), "source": row.get("source"), "text": None, "token_ids": [],
        "num_prompt_tokens": num_prompt_tokens, "stop_reason": None, "new_tokens": 0, "target_calls": 0,
        "draft_calls": 0, "tokens_per_target_call": None, "accepted_lengths": [], "wall_s": None,
        "replica": replica, "error": error,
    }  # fmt: skip


def _prompt_ids(state: DecodeState, row: dict[str, Any]) -> list[int]:
    from autojudge.tasks import Problem

    problem = Problem(id=str(row["id"]), question=row.get("question"), prompt=row.get("prompt"))
    return state.task.prompt_ids(problem, state.pair.tokenizer)


def decode_rows(state: DecodeState, rows: list[dict[str, Any]]) -> Any:
    """The stage function: rows {id, source, question, prompt, error} -> output Table (same order).

    Invalid rows and rows whose decode fails get `error`; the others are decoded together.
    When the batched decode raises, each row is retried alone so only the culprit fails.
    """
    import pyarrow as pa

    outputs: list[dict[str, Any] | None] = [None] * len(rows)
    todo: list[tuple[int, list[int]]] = []  # (row index, prompt ids)
    for index, row in enumerate(rows):
        if row.get("error"):
            outputs[index] = _error_row(row, row["error"], state.replica)
            continue
        try:
            ids = _prompt_ids(state, row)
        except Exception as err:  # template or tokenizer failure on odd text
            outputs[index] = _error_row(row, f"cannot tokenize: {type(err).__name__}: {err}", state.replica)
            continue
        if not ids:
            outputs[index] = _error_row(row, "prompt has no tokens", state.replica, 0)
        elif len(ids) > state.max_prompt_tokens:
            outputs[index] = _error_row(
                row, f"prompt too long: {len(ids)} tokens > {state.max_prompt_tokens}", state.replica, len(ids)
            )
        else:
            todo.append((index, ids))

    def generate(items: list[tuple[int, list[int]]]) -> None:
        results = state.engine.generate([ids for _, ids in items], state.settings)
        for (index, ids), result in zip(items, results):
            m = result.metrics
            outputs[index] = {
                "id": rows[index]["id"], "source": rows[index].get("source"),
                "text": state.pair.tokenizer.decode(result.token_ids, skip_special_tokens=True),
                "token_ids": list(result.token_ids), "num_prompt_tokens": len(ids),
                "stop_reason": result.stop_reason, "new_tokens": m.new_tokens, "target_calls": m.target_calls,
                "draft_calls": m.draft_calls, "tokens_per_target_call": m.tokens_per_target_call,
                "accepted_lengths": list(m.accepted_lengths), "wall_s": m.wall_s,
                "replica": state.replica, "error": None,
            }  # fmt: skip

    if todo:
        try:
            generate(todo)
        except Exception:  # isolate the failing row(s); the others still get their output
            for item in todo:
                try:
                    generate([item])
                except Exception as err:
                    message = f"decode failed: {type(err).__name__}: {err}"
                    outputs[item[0]] = _error_row(rows[item[0]], message, state.replica, len(item[1]))
    return pa.Table.from_pylist(outputs, schema=output_schema())


class Decoder:
    """One decode replica (models stay loaded for the actor's life)."""

    def __init__(self, config: DecodeStageConfig, num_gpus: float = 0.0):
        self.state = load_decode_state(config, num_gpus=num_gpus)

    def __call__(self, batch: Any) -> Any:
        """pyarrow Table of corpus rows -> pyarrow Table of outputs (same rows, same order)."""
        return decode_rows(self.state, batch.to_pylist())
