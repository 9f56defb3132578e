"""Hogwild! benchmark: N = 1, 2, 4 workers of one model against plain greedy generation of that model.

Same problems, same model, greedy, side by side in one process (the methods take turns on
each problem, so a busy machine slows them alike):
- `greedy (generate)`: transformers `generate(do_sample=False)` on the task's plain prompt
  (no collaboration prompt), batch 1 - the baseline;
- `hogwild N=1 plain`: this module's block forward with one worker and no collaboration
  prompt - token for token the same output as the baseline; shows the cost of the
  hand-written forward;
- `hogwild N=k`: k workers with the collaboration prompt (each worker's block named).

Per method: generated tokens, model forwards (for greedy: one per generated token;
for Hogwild!: batched steps), tokens per forward, tokens/s, the wall time until a final
answer was complete ("The final answer is N" / "#### N": for Hogwild! the first worker to
write one, for greedy its own text), and how many answers were right. With `--agreement`
(cheap models only) it also measures how often a worker's greedy token equals the one a
from-scratch forward over its view would pick (the method's approximation, see
autojudge/decode/hogwild/generator.py).

    PYTHONPATH=. python bench/hogwild.py --model toy:target --task toy --num 20 --max-new-tokens 128 --agreement
    PYTHONPATH=. python bench/hogwild.py --model smollm2:target --task gsm8k --num 4 --max-new-tokens 192
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

GSM8K_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k" / "test.jsonl"
INSTRUCTION = 'Solve the problem step by step, then end with "The final answer is N".'


@dataclass
class BenchConfig:
    """What to benchmark."""

    model: str = "toy:target"
    """Model spec (toy:target, smollm2:target, a folder)."""
    task: str = "toy"
    """toy (generated held-out problems, seed 3) or gsm8k (GSM8K test file, with an answer instruction)."""
    num: int = 10
    """Number of problems."""
    workers: tuple[int, ...] = (1, 2, 4)
    """Worker counts to run with the collaboration prompt."""
    max_new_tokens: int = 128
    """Budget per worker (and for greedy)."""
    threads: int = 1
    """torch CPU threads."""
    agreement: bool = False
    """Also measure the workers' token agreement with a from-scratch forward over their views."""
    input: str | None = None
    """GSM8K-format JSONL (default: the shared GSM8K test file for task gsm8k)."""


@dataclass
class MethodResult:
    """Totals of one method over all problems."""

    method: str
    new_tokens: int = 0
    forwards: int = 0
    wall_s: float = 0.0
    answer_wall_s: list[float] = field(default_factory=list)
    answered: int = 0
    correct: int = 0
    agreement: list[int] = field(default_factory=lambda: [0, 0])

    def row(self, baseline: "MethodResult") -> dict[str, Any]:
        tokens_per_s = self.new_tokens / self.wall_s if self.wall_s else 0.0
        base_tps = baseline.new_tokens / baseline.wall_s if baseline.wall_s else 0.0
        mean_answer = sum(self.answer_wall_s) / len(self.answer_wall_s) if self.answer_wall_s else None
        return {
            "method": self.method,
            "new_tokens": self.new_tokens,
            "forwards": self.forwards,
            "tokens_per_forward": round(self.new_tokens / max(self.forwards, 1), 3),
            "wall_s": round(self.wall_s, 2),
            "tokens_per_s": round(tokens_per_s, 1),
            "tokens_per_s_vs_greedy": round(tokens_per_s / base_tps, 2) if base_tps else None,
            "answered": self.answered,
            "correct": self.correct,
            "mean_s_to_answer": None if mean_answer is None else round(mean_answer, 2),
            "agreement_with_from_scratch": (
                round(self.agreement[0] / self.agreement[1], 4) if self.agreement[1] else None
            ),
        }


def load_problems(config: BenchConfig) -> list[Any]:
    from autojudge.tasks import build_task

    if config.task == "toy":
        return build_task("toy", seed=3).load(config.input, limit=config.num)
    return build_task("gsm8k", instruction=INSTRUCTION).load(config.input or str(GSM8K_TEST), limit=config.num)


def run_greedy(model: Any, tokenizer: Any, task: Any, problem: Any, config: BenchConfig, eos: list[int],
               result: MethodResult) -> None:
    """transformers `generate`, batch 1, on the plain task prompt; the answer time is the time to the end of
    the text (the answer comes last)."""
    from autojudge.decode.hogwild.generator import marked_final_answer

    ids = tokenizer(task.render_prompt(problem, tokenizer), add_special_tokens=False, return_tensors="pt").input_ids
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=config.max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
    wall = time.perf_counter() - started
    tokens = [t for t in out if t not in eos]
    result.new_tokens += len(tokens)
    result.forwards += len(out) - 1  # after the prompt forward, as Hogwild! steps count
    result.wall_s += wall
    answer = marked_final_answer(tokenizer.decode(tokens, skip_special_tokens=True), finished=True)
    if answer is not None:
        result.answered += 1
        result.answer_wall_s.append(wall)
        result.correct += int(answer == _truth(problem))


def run_hogwild(generator: Any, model: Any, tokenizer: Any, task: Any, problem: Any, config: BenchConfig,
                result: MethodResult) -> None:
    """One problem through a HogwildGenerator (the collaboration prompt when it collaborates)."""
    if generator.config.collaborate:
        message = problem.question if not task.instruction else f"{problem.question}\n{task.instruction}"
        text = generator.render_prompt(message)
    else:
        text = task.render_prompt(problem, tokenizer)
    prompt = tokenizer(text, add_special_tokens=False).input_ids
    if config.agreement and generator.config.workers > 1:
        _measure_agreement(model, generator, prompt, result)
    out = generator.generate(prompt)
    result.new_tokens += out.new_tokens
    result.forwards += out.steps
    result.wall_s += out.wall_s
    if out.answer is not None:
        result.answered += 1
        result.answer_wall_s.append(out.answer_wall_s)
        result.correct += int(out.answer == _truth(problem))


def _measure_agreement(model: Any, generator: Any, prompt: list[int], result: MethodResult) -> None:
    """Replay the generation step by step and count steps where each worker's greedy token equals the
    argmax of a from-scratch forward over its view (untimed)."""
    from autojudge.decode.hogwild.blocks import Feed, SharedCache, forward_feeds
    from autojudge.decode.hogwild.generator import worker_header

    cache = SharedCache(generator.decoder)
    prompt_block = cache.add_block("prompt")
    blocks = [cache.add_block(name) for name in generator.names]
    views = [[prompt_block] + [o for o in blocks if o != b] + [b] for b in blocks]
    forward_feeds(cache, [Feed(prompt_block, list(prompt), [prompt_block])])
    headers = [generator._encode(worker_header(n, generator.config.separator, generator.config.header)) for n in generator.names]
    active = list(range(len(blocks)))
    logits = forward_feeds(cache, [Feed(blocks[i], headers[i], views[i]) for i in active])
    for _ in range(generator.config.max_new_tokens):
        tokens = logits.argmax(-1).tolist()
        with torch.no_grad():
            for row, index in enumerate(active):
                scratch = model(torch.tensor([cache.view_token_ids(views[index])])).logits[0, -1].argmax().item()
                result.agreement[0] += int(scratch == tokens[row])
                result.agreement[1] += 1
        keep = [(i, t) for i, t in zip(active, tokens) if t not in generator.eos]
        if not keep:
            break
        active = [i for i, _ in keep]
        logits = forward_feeds(cache, [Feed(blocks[i], [t], views[i]) for i, t in keep])


def _truth(problem: Any) -> str | None:
    from autojudge.tasks.answers import extract_answer

    return extract_answer(problem.answer) if problem.answer else None


def run(config: BenchConfig) -> list[dict[str, Any]]:
    from autojudge.decode.hogwild.generator import HogwildConfig, HogwildGenerator
    from autojudge.models import eos_token_ids, load_model, load_tokenizer
    from autojudge.tasks import build_task

    torch.set_num_threads(config.threads)
    model, tokenizer = load_model(config.model), load_tokenizer(config.model)
    eos = eos_token_ids(tokenizer, model)
    task = build_task(config.task, seed=3 if config.task == "toy" else None,
                      instruction=None if config.task == "toy" else INSTRUCTION)
    problems = load_problems(config)
    settings = [(1, False)] + [(workers, True) for workers in config.workers]
    generators = [
        HogwildGenerator(model, tokenizer, HogwildConfig(workers=n, max_new_tokens=config.max_new_tokens,
                                                         collaborate=collaborate), eos)
        for n, collaborate in settings
    ]
    baseline = MethodResult("greedy (generate)")
    results = [MethodResult(f"hogwild N={n}" + ("" if collaborate else " plain")) for n, collaborate in settings]
    for index, problem in enumerate(problems):  # methods alternate per problem: a busy machine slows all alike
        run_greedy(model, tokenizer, task, problem, config, eos, baseline)
        for generator, result in zip(generators, results):
            run_hogwild(generator, model, tokenizer, task, problem, config, result)
        print(f"problem {index + 1}/{len(problems)} done", flush=True)
    return [r.row(baseline) for r in [baseline] + results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy:target")
    parser.add_argument("--task", choices=["toy", "gsm8k"], default="toy")
    parser.add_argument("--num", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--agreement", action="store_true")
    parser.add_argument("--input", default=None)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    config = BenchConfig(model=args.model, task=args.task, num=args.num, workers=tuple(args.workers),
                         max_new_tokens=args.max_new_tokens, threads=args.threads, agreement=args.agreement,
                         input=args.input)
    rows = run(config)
    header = ["method", "new_tokens", "forwards", "tokens_per_forward", "wall_s", "tokens_per_s",
              "tokens_per_s_vs_greedy", "answered", "correct", "mean_s_to_answer", "agreement_with_from_scratch"]
    print(f"# {json.dumps(asdict(config))}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join("" if row[k] is None else str(row[k]) for k in header) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": asdict(config), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
