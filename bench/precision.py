"""How far bfloat16 greedy decoding departs from float32, and from itself at another batch width.

    PYTHONPATH=. python bench/precision.py --num 32 --budget 160 --shots 3

The real run (`--preset smollm2-gsm8k`) loads the pair in bfloat16 (`@bf16`), so "exact" there means
greedy decoding *in bfloat16 by the engine*. Two figures say what that means:

1. **bf16 vs fp32**: the target's greedy answers to the first `--num` GSM8K test problems (the run's
   few-shot prompts), one row at a time, in each precision: per problem the first generated position
   where they differ, and whether the final answers agree.
2. **wide vs one-row steps in bf16**: the same answers decoded by the engine with `--width` rows per
   forward (the prompts decoded together) against one row per forward. oneDNN picks kernels by shape, so a
   wide product can round a near-tie differently; this counts the problems whose greedy text changes and
   the first position where it does. (fp32 is checked the same way.)

Plain greedy (window 0), 1 thread.
"""

from __future__ import annotations

import argparse
import time


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (the shorter length if one is a prefix of the other), None if equal."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smollm2:target", help="target model spec (without @dtype)")
    parser.add_argument("--num", type=int, default=32, help="GSM8K test problems")
    parser.add_argument("--budget", type=int, default=160, help="generation budget")
    parser.add_argument("--shots", type=int, default=3, help="few-shot examples (the run preset's 3)")
    parser.add_argument("--width", type=int, default=32, help="rows per forward of the wide decode")
    args = parser.parse_args()

    import torch

    from autojudge.decode.engine.core import EngineCore, RequestSettings
    from autojudge.models import load_model, load_tokenizer
    from autojudge.tasks import build_task
    from autojudge.tasks.gsm8k import load_problems, shared_gsm8k_file

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(args.target)
    task = build_task("gsm8k", shots=args.shots)
    problems = load_problems(shared_gsm8k_file("test"), limit=args.num)
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    settings = RequestSettings(max_new_tokens=args.budget, window=0)
    outputs: dict[tuple[str, int], list[list[int]]] = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = load_model(args.target, dtype=dtype)
        for width in (1, args.width):
            engine = EngineCore(model, model, tokenizer=tokenizer, eos_token_ids=tokenizer.eos_token_id, default_window=0,
                                max_batch=width, shared_prefix=task.shared_prefix_ids(tokenizer))
            start = time.perf_counter()
            outputs[(name, width)] = [r.token_ids for r in engine.generate(prompts, settings)]
            print(f"{name} width {width}: {time.perf_counter() - start:.0f} s", flush=True)

    def answers(ids: list[list[int]]) -> list[object]:
        return [task.answer(p, tokenizer.decode(t, skip_special_tokens=True)) for p, t in zip(problems, ids)]

    def compare(label: str, a: list[list[int]], b: list[list[int]]) -> None:
        firsts = [first_difference(x, y) for x, y in zip(a, b)]
        differing = sorted(f for f in firsts if f is not None)
        same_answer = sum(x == y for x, y in zip(answers(a), answers(b)))
        tokens = sum(len(x) for x in a)
        print(f"{label}: {len(differing)}/{len(problems)} answers differ somewhere (first differing position, sorted: "
              f"{differing}); final answers equal on {same_answer}/{len(problems)}; {tokens} tokens compared")

    print(f"{args.target}, {len(problems)} GSM8K test problems, {args.shots}-shot prompts, budget {args.budget}, greedy")
    compare("bf16 vs fp32 (one row each)", outputs[("bf16", 1)], outputs[("fp32", 1)])
    compare(f"bf16: {args.width} rows per forward vs one row", outputs[("bf16", args.width)], outputs[("bf16", 1)])
    compare(f"fp32: {args.width} rows per forward vs one row", outputs[("fp32", args.width)], outputs[("fp32", 1)])


if __name__ == "__main__":
    main()
