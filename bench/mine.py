"""Mining benchmark: the plain algorithm vs the fast miner on the same prompts and models.

    PYTHONPATH=. python bench/mine.py --limit 50              # toy pair, 1 thread each (or pip install -e .)
    PYTHONPATH=. python bench/mine.py --limit 50 --workers 1 2  # + the fast miner on 1 and 2 Ray actors

Prints labels/s of each method (1 worker = 1 torch thread, models already loaded), by wall
clock and by the process's CPU time (the robust figure on a machine shared with others),
their ratio, label agreement on (prompt_id, position, target_token, draft_token,
important), the important fraction and mismatches per prompt, and a profile of the
fast miner (time in target forwards, draft forwards, search logic). With `--workers`,
also the fast miner's labels/s through `MinerActor`s (time from actors ready to last
chunk back). `--json FILE` saves the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict
from typing import Any


def label_keys(rows: list[dict[str, Any]]) -> Counter:
    return Counter((r["prompt_id"], r["position"], r["target_token"], r["draft_token"], r["important"]) for r in rows)


def run_in_process(pair: Any, task: Any, problems: list[Any], args: argparse.Namespace, method: str) -> dict[str, Any]:
    from autojudge.actors.miner import MiningWorker

    worker = MiningWorker(pair, task, args.max_new_tokens, args.batch_size, method)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        labels, responses = worker.mine(problems)
    finally:
        worker.close()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = {"labels": labels, "responses": responses, "seconds": seconds, "labels_per_s": len(labels) / seconds,
              "cpu_seconds": cpu_seconds, "labels_per_cpu_s": len(labels) / cpu_seconds}
    if method == "fast":
        result["counters"] = asdict(worker.searcher.counters)
    return result


def run_ray_workers(problems: list[Any], args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """The fast miner on `workers` actors (1 CPU, 1 thread each); time from ready to done."""
    import ray

    from autojudge.actors.miner import MinerActor
    from autojudge.pipeline.mine import MineConfig, chunked
    from autojudge.ray_utils import init_ray

    init_ray("local", num_cpus=None)  # our own cluster, not a stray `ray start` one
    config = MineConfig(task="toy", target=args.target, draft=args.draft, workers=workers, cpus_per_worker=1,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, seed=args.seed)
    actors = [MinerActor.options(num_cpus=1).remote(config) for _ in range(workers)]
    ray.get([actor.describe.remote() for actor in actors])
    chunks = chunked(problems, max(1, -(-len(problems) // (2 * workers))))
    start = time.perf_counter()
    refs = [actors[i % workers].mine_chunk.remote(chunk) for i, chunk in enumerate(chunks)]
    outputs = ray.get(refs)
    seconds = time.perf_counter() - start
    counters = ray.get([actor.counters.remote() for actor in actors])
    for actor in actors:
        ray.kill(actor)
    labels = [row for chunk_labels, _ in outputs for row in chunk_labels]
    return {"workers": workers, "labels": len(labels), "seconds": seconds, "labels_per_s": len(labels) / seconds,
            "counters": counters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="toy:target")
    parser.add_argument("--draft", default="toy:draft")
    parser.add_argument("--limit", type=int, default=50, help="toy prompts (seed --seed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="searches in flight (all prompts in one wave up to this)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process runs")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also run the fast miner on these Ray actor counts")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--fast-only", action="store_true", help="skip the plain algorithm (tuning runs)")
    args = parser.parse_args()

    import torch

    from autojudge.models import load_pair
    from autojudge.tasks import get_task

    torch.set_num_threads(args.threads)
    pair = load_pair(args.target, args.draft)
    task = get_task("toy", seed=args.seed)
    problems = task.load(limit=args.limit)

    fast = run_in_process(pair, task, problems, args, "fast")
    if args.fast_only:
        c = fast["counters"]
        print(f"fast: {len(fast['labels'])} labels in {fast['seconds']:.2f}s = {fast['labels_per_s']:.2f} labels/s; "
              f"target {c['target_seconds']:.2f}s/{c['target_forwards']} fwd/{c['target_tokens']} tok, "
              f"draft {c['draft_seconds']:.2f}s/{c['draft_forwards']} fwd/{c['draft_tokens']} tok, {c['ticks']} ticks")
        return
    plain = run_in_process(pair, task, problems, args, "plain")
    plain_keys, fast_keys = label_keys(plain["labels"]), label_keys(fast["labels"])
    matched = sum((plain_keys & fast_keys).values())
    agreement = matched / max(1, max(sum(plain_keys.values()), sum(fast_keys.values())))
    important = sum(r["important"] for r in plain["labels"])
    prompts = len(plain["responses"])
    mean_len = sum(len(r["initial_response_ids"] or []) for r in plain["responses"]) / max(1, prompts)
    counters = fast["counters"]
    other = fast["seconds"] - counters["target_seconds"] - counters["draft_seconds"] - counters["search_seconds"]
    figures = {
        "prompts": prompts,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "plain": {k: plain[k] for k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s")}
        | {"labels": len(plain["labels"])},
        "fast": {k: fast[k] for k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s")}
        | {"labels": len(fast["labels"]), "counters": counters, "other_seconds": other},
        "speedup": fast["labels_per_s"] / plain["labels_per_s"],
        "speedup_cpu_time": fast["labels_per_cpu_s"] / plain["labels_per_cpu_s"],
        "agreement": agreement,
        "rows_plain_only": sum((plain_keys - fast_keys).values()),
        "rows_fast_only": sum((fast_keys - plain_keys).values()),
        "important_fraction": important / max(1, len(plain["labels"])),
        "mismatches_per_prompt": len(plain["labels"]) / max(1, prompts),
        "mean_initial_response_tokens": mean_len,
        "ray": [run_ray_workers(problems, args, w) for w in args.workers],
    }
    print(f"prompts {prompts}, mean response {mean_len:.1f} tokens, budget {args.max_new_tokens}, threads {args.threads}")
    for name, run in (("plain", plain), ("fast ", fast)):
        print(f"{name}: {len(run['labels'])} labels in {run['seconds']:.1f}s = {run['labels_per_s']:.2f} labels/s wall; "
              f"{run['cpu_seconds']:.1f} CPU-s = {run['labels_per_cpu_s']:.2f} labels per CPU-s")
    print(f"speedup {figures['speedup']:.1f}x wall, {figures['speedup_cpu_time']:.1f}x CPU time (batch {args.batch_size}); "
          f"label agreement {agreement:.2%} "
          f"(plain-only rows {figures['rows_plain_only']}, fast-only rows {figures['rows_fast_only']})")
    print(f"important fraction {figures['important_fraction']:.1%}, mismatches per prompt {figures['mismatches_per_prompt']:.2f}")
    print(
        f"fast profile: target {counters['target_seconds']:.2f}s in {counters['target_forwards']} forwards "
        f"({counters['target_tokens']} tokens), draft {counters['draft_seconds']:.2f}s in {counters['draft_forwards']} "
        f"forwards ({counters['draft_tokens']} tokens), search logic + E {counters['search_seconds']:.2f}s, "
        f"other (tokenize, rows) {other:.2f}s; {counters['ticks']} ticks"
    )
    for ray_run in figures["ray"]:
        print(f"fast on {ray_run['workers']} Ray worker(s): {ray_run['labels']} labels in {ray_run['seconds']:.1f}s "
              f"= {ray_run['labels_per_s']:.2f} labels/s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
