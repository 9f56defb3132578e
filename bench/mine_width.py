"""Mining at width, in steady state: what one core does with many searches in flight.

    PYTHONPATH=. python bench/mine_width.py --seconds 420 --width 64
    PYTHONPATH=. python bench/mine_width.py --seconds 420 --width 64 --settings '{"min_guess": 1, "draft_proposals": 6}'

An in-process `MiningWorker` (1 torch thread) mines GSM8K train problems (3-shot prompts, budget 160,
finished answers only: the smollm2-gsm8k preset) on the real pair with `--width` searches in flight. After
`--warmup` seconds (the first responses of the first wave) it records, until `--seconds`, every batched
forward (rows, longest chunk, real tokens, seconds) and every finished label, then prints labels per
second in that window, target tokens fed per label, the padding of the forwards (grid slots per real
token) and the time per real token. The labels of a window are the mismatches whose regeneration ended in
it, whatever problem they belong to, so the figure is the steady state a long run sees (`bench/mine.py`
times whole problems and commands). `--settings` overrides `LookaheadSettings` fields (default: what the
miner picks for the target, `settings_for`); `--overhead` the forward grouping's fixed cost in tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=420, help="run this long after loading (warm-up included)")
    parser.add_argument("--warmup", type=float, default=120, help="seconds left out at the start")
    parser.add_argument("--width", type=int, default=64, help="searches in flight")
    parser.add_argument("--offset", type=int, default=1600, help="first GSM8K train problem (4 x width are queued)")
    parser.add_argument("--settings", default=None, help="JSON of LookaheadSettings fields to override")
    parser.add_argument("--overhead", type=int, default=None, help="forward grouping's fixed cost in tokens")
    parser.add_argument("--target", default="smollm2:target")
    parser.add_argument("--draft", default="smollm2:draft")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    import autojudge.decode.mining.lookahead as lookahead
    from autojudge.actors.miner import MiningWorker
    from autojudge.decode.mining.search import TaskEvaluator
    from autojudge.setup import DecodingConfig, resolve
    from autojudge.tasks import build_task
    from autojudge.tasks.gsm8k import load_problems, shared_gsm8k_file

    pair = resolve(DecodingConfig(args.target, args.draft)).load_pair()
    task = build_task("gsm8k", shots=3, shots_file=shared_gsm8k_file("train"))
    problems = load_problems(shared_gsm8k_file("train"), limit=args.offset + 4 * args.width)[args.offset :]
    settings = lookahead.settings_for(pair.target)
    for name, value in json.loads(args.settings or "{}").items():
        setattr(settings, name, value)

    forwards: list[tuple[float, bool, int, int, int, float]] = []  # start, target?, rows, longest chunk, real tokens, seconds
    labels: list[float] = []
    forward_rows, same = lookahead.forward_rows, TaskEvaluator.same

    def timed_forward(model: Any, cache: Any, rows: Any, chunks: Any, *rest: Any, **options: Any) -> Any:
        start = time.perf_counter()
        out = forward_rows(model, cache, rows, chunks, *rest, **options)
        forwards.append((start, model is pair.target, len(rows), max(len(c) for c in chunks), sum(len(c) for c in chunks),
                         time.perf_counter() - start))
        return out

    def counted_same(self: Any, *rest: Any) -> bool:
        labels.append(time.perf_counter())  # one call per label, when its regeneration has ended
        return same(self, *rest)

    lookahead.forward_rows = timed_forward  # type: ignore[assignment]
    TaskEvaluator.same = counted_same  # type: ignore[method-assign]
    worker = MiningWorker(pair, task, 160, args.width, "fast", lookahead=settings, finished_only=True)
    if args.overhead is not None:
        worker.searcher.forward_overhead_tokens = args.overhead
    start = time.perf_counter()
    threading.Thread(target=worker.mine, args=(problems,), daemon=True).start()
    time.sleep(args.seconds)
    begin = start + args.warmup
    window = [f for f in forwards if f[0] >= begin]
    done = [t for t in labels if t >= begin]
    span = time.perf_counter() - begin
    figures: dict[str, Any] = {"width": args.width, "settings": vars(settings), "overhead": worker.searcher.forward_overhead_tokens,
                               "window_seconds": span, "labels": len(done), "labels_per_s": len(done) / span}
    print(f"{args.target} / {args.draft}, {args.width} in flight, {vars(settings)}")
    print(f"window {span:.0f} s (after {args.warmup:.0f} s): {len(done)} labels = {len(done) / span:.2f} labels/s")
    for is_target, name in ((True, "target"), (False, "draft")):
        mine = [f for f in window if f[1] == is_target]
        real, slots, seconds = sum(f[4] for f in mine), sum(f[2] * f[3] for f in mine), sum(f[5] for f in mine)
        figures[name] = {"forwards": len(mine), "real_tokens": real, "grid_slots": slots, "seconds": seconds,
                         "rows_per_forward": statistics.mean(f[2] for f in mine) if mine else 0.0}
        print(f"{name}: {len(mine)} forwards, {seconds:.1f} s ({1000 * seconds / max(1, real):.2f} ms per real token), "
              f"{real / max(1, len(mine)):.1f} real tokens and {figures[name]['rows_per_forward']:.1f} rows per forward, "
              f"padding {slots / max(1, real):.2f} grid slots per real token"
              + (f"; {real / max(1, len(done)):.1f} tokens per label" if is_target else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)
    os._exit(0)  # the search thread is mid-problem: stop without waiting for it


if __name__ == "__main__":
    main()
