"""Mining benchmark: the plain algorithm vs the fast miner on the same prompts and models.

    PYTHONPATH=. python bench/mine.py --limit 50              # toy pair, 1 thread each (or pip install -e .)
    PYTHONPATH=. python bench/mine.py --limit 50 --workers 1 2  # + the fast miner on 1 and 2 Ray actors
    PYTHONPATH=. python bench/mine.py --target smollm2:target --draft smollm2:draft --task gsm8k --limit 10
    PYTHONPATH=. python bench/mine.py --limit 400 --seed 2 --max-new-tokens 256 --whole-command
    PYTHONPATH=. python bench/mine.py --target smollm2:target --draft smollm2:draft --task gsm8k --shots 3 \
      --finished-only --max-new-tokens 160 --limit 128 --plain-limit 3 --batch-size 64 --whole-command-only

The baseline is the *straightforward* plain search (`straightforward_search` below): the
semi-greedy algorithm one prompt at a time, batch 1, a target `generate()` (with its own
KV cache) per mismatch whose prefill also yields the target feature, one teacher-forced
draft pass per step and one draft pass for the draft feature. (The oracle
`plain_search` of the package recomputes the target feature with an extra uncached
forward per label; `--oracle` also runs it.) `--whole-command` times the whole
`autojudge mine` command in a subprocess (interpreter and Ray start, model loading, one
worker), the figure a user sees, next to the pipeline-only figure; `--whole-command-only` runs
only the baseline and that command (whose labels it compares with the baseline's).

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
from pathlib import Path
from typing import Any

from autojudge.commands import DEFAULT_DRAFT, DEFAULT_TARGET, add_pair_arguments


def label_keys(rows: list[dict[str, Any]]) -> Counter:
    return Counter((r["prompt_id"], r["position"], r["target_token"], r["draft_token"], r["important"]) for r in rows)


class StraightforwardCounters:
    """Where the straightforward search's time goes."""

    def __init__(self) -> None:
        self.target_generate_seconds = 0.0
        self.target_generated_tokens = 0
        self.target_prefill_tokens = 0
        self.draft_seconds = 0.0
        self.draft_tokens = 0
        self.generate_calls = 0


def straightforward_search(target: Any, draft: Any, prompt: list[int], evaluator: Any, budget: int, eos_ids: list[int],
                           pad_token_id: int, counters: StraightforwardCounters, finished_only: bool = False) -> Any:
    """The semi-greedy search as one would write it directly (docs/design.md §1.1): batch 1, a fresh
    target `generate()` (KV-cached) per mismatch; the prefill of that call holds the target
    feature at the swapped token; a teacher-forced draft pass per step for the draft's
    predictions, and one for the draft feature. Same labels as `plain_search`."""
    import torch
    from transformers import GenerationConfig

    from autojudge.decode.mining.search import Label, SearchResult

    device = next(target.parameters()).device

    def generate(context: list[int], new_tokens: int) -> tuple[list[int], torch.Tensor]:
        """(new tokens, target last hidden state at the last context position [H]): one cached
        prefill forward (which gives the feature and the first token), then `generate()`
        continuing from that KV cache."""
        start = time.perf_counter()
        ids = torch.tensor([context], dtype=torch.long, device=device)  # [1, len]
        out = target.base_model(input_ids=ids, use_cache=True)
        hidden = out.last_hidden_state[0, -1]  # [H], after the final norm
        first = int(target.get_output_embeddings()(hidden).argmax())
        tokens = [first]
        if first not in eos_ids and new_tokens > 1:
            config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens - 1, eos_token_id=eos_ids,
                                      pad_token_id=pad_token_id)
            full = torch.tensor([context + [first]], dtype=torch.long, device=device)
            more = target.generate(full, attention_mask=torch.ones_like(full), cache=out.cache,
                                   generation_config=config)
            tokens += more[0, len(context) + 1:].tolist()
        tokens = tokens[: max(new_tokens, 0)]
        counters.target_generate_seconds += time.perf_counter() - start
        counters.target_generated_tokens += len(tokens)
        counters.target_prefill_tokens += len(context)
        counters.generate_calls += 1
        return tokens, hidden.float().cpu()

    def draft_pass(sequence: list[int]) -> Any:
        start = time.perf_counter()
        out = draft.base_model(input_ids=torch.tensor([sequence], dtype=torch.long, device=device))
        hidden = out.last_hidden_state[0]  # [len, Hd]
        logits = draft.get_output_embeddings()(hidden)  # [len, V]
        counters.draft_seconds += time.perf_counter() - start
        counters.draft_tokens += len(sequence)
        return hidden, logits

    with torch.inference_mode():
        response, _ = generate(prompt, budget)
        result = SearchResult(initial_response=list(response), final_response=response, target_answer=None)
        reference = evaluator.answer(response)
        result.target_answer = reference
        if finished_only and not (response and response[-1] in eos_ids):  # a cut answer is not mined
            result.unfinished = True
            return result
        left = 0
        while left < len(response):
            _, logits = draft_pass(prompt + response[:-1])
            drafts = logits[len(prompt) - 1:].argmax(-1).tolist()  # d_i for every response position i
            mismatches = [i for i in range(left, len(response)) if drafts[i] != response[i]]
            if not mismatches:
                break
            m = mismatches[0]
            head = response[:m] + [drafts[m]]
            if drafts[m] in eos_ids or budget - len(head) <= 0:
                _, h_target = generate(prompt + head, 1)  # only the prefill's feature is used
                alternative = head
            else:
                continuation, h_target = generate(prompt + head, budget - len(head))
                alternative = head + continuation
            h_draft = draft_pass(prompt + head)[0][-1].float().cpu()
            label = Label(m, response[m], drafts[m], important=not evaluator.same(alternative, reference))
            label.h_target, label.h_draft = h_target, h_draft
            result.labels.append(label)
            if not label.important:
                response = alternative
            left = m + 1
            if drafts[m] in eos_ids:
                break
        result.final_response = response
    return result


def run_straightforward(pair: Any, task: Any, problems: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """The straightforward baseline over `problems`, rows as the mining worker writes them."""
    from autojudge.actors.miner import prepare_prompt, result_rows
    from autojudge.decode.mining.search import TaskEvaluator
    from autojudge.models import eos_token_ids, model_context

    tokenizer = pair.tokenizer
    eos_ids = eos_token_ids(tokenizer, pair.target)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    context = min(model_context(pair.target), model_context(pair.draft))
    counters = StraightforwardCounters()
    labels: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for problem in problems:
        item = prepare_prompt(problem, task, tokenizer, args.max_new_tokens, context)
        found = None
        if item.error is None:
            found = straightforward_search(pair.target, pair.draft, item.prompt_ids, TaskEvaluator(task, problem, tokenizer),
                                           item.budget, eos_ids, pad_id, counters, finished_only=args.finished_only)
        rows, response = result_rows(item, found)
        labels.extend(rows)
        responses.append(response)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"labels": labels, "responses": responses, "seconds": seconds, "labels_per_s": len(labels) / seconds,
            "cpu_seconds": cpu_seconds, "labels_per_cpu_s": len(labels) / cpu_seconds, "counters": vars(counters)}


def run_whole_command(args: argparse.Namespace, out: str, batch_size: int | None = None) -> dict[str, Any]:
    """`autojudge mine` as a user runs it (new interpreter, Ray start, model loading, 1 worker): wall
    seconds. batch_size None = the command's default (64)."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "autojudge.cli", "mine", "--task", args.task, "--target", args.target,
               "--draft", args.draft, "--limit", str(args.limit), "--max-new-tokens", str(args.max_new_tokens),
               "--workers", "1", "--cpus-per-worker", str(args.threads), "--out", out, "--no-progress"]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    command += ["--seed", str(args.seed)] if args.task == "toy" else ["--input", args.input_slice]
    if args.instruction:
        command += ["--instruction", args.instruction]
    if args.shots:
        command += ["--shots", str(args.shots), "--shots-file", args.input]
    if args.finished_only:
        command += ["--finished-only"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"autojudge mine failed: {done.stderr[-2000:]}")
    counts = json.loads((Path(out) / "manifest.json").read_text())["counts"]
    from autojudge.pipeline.shards import read_labels

    rows = read_labels(out, columns=["prompt_id", "position", "target_token", "draft_token", "important"]).to_pylist()
    return {"command": " ".join(command), "batch_size": batch_size or 64, "seconds": seconds, "labels": counts["labels"],
            "labels_per_s": counts["labels"] / seconds, "rows": rows}


def run_in_process(pair: Any, task: Any, problems: list[Any], args: argparse.Namespace, method: str) -> dict[str, Any]:
    from autojudge.actors.miner import MiningWorker
    from autojudge.decode.mining.lookahead import settings_for

    if method == "straightforward":
        return run_straightforward(pair, task, problems, args)
    settings = settings_for(pair.target)  # what the miner picks for this target
    if getattr(args, "regen_proposals", None) is not None:
        settings.regen_proposals = args.regen_proposals
    worker = MiningWorker(pair, task, args.max_new_tokens, args.batch_size, method, lookahead=settings,
                          finished_only=args.finished_only)
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
    from autojudge.setup import DecodingConfig

    init_ray("local", num_cpus=None)  # our own cluster, not a stray `ray start` one
    config = MineConfig(task=args.task, instruction=args.instruction, workers=workers, cpus_per_worker=1,
                        decoding=DecodingConfig(args.target, args.draft, max_new_tokens=args.max_new_tokens),
                        input=getattr(args, "input_slice", None), batch_size=args.batch_size, seed=args.seed)
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


def load_bench_problems(args: argparse.Namespace) -> tuple[Any, list[Any]]:
    """(task, problems): toy problems of --seed, or GSM8K problems --offset.. of --input
    (written to a slice file for --whole-command)."""
    import tempfile

    from autojudge.tasks import build_task, write_jsonl
    from autojudge.tasks.gsm8k import load_problems

    if args.task == "toy":
        task = build_task("toy", seed=args.seed, instruction=args.instruction)
        return task, task.load(limit=args.limit)
    task = build_task(args.task, instruction=args.instruction, shots=args.shots, shots_file=args.input if args.shots else None)
    problems = load_problems(args.input, limit=args.offset + args.limit)[args.offset:]
    args.input_slice = str(Path(tempfile.mkdtemp(prefix="bench-mine-")) / "prompts.jsonl")
    write_jsonl(args.input_slice, [{"id": p.id, "question": p.question, "answer": p.answer} for p in problems])
    return task, problems


def compare_labels(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    keys_a, keys_b = label_keys(a), label_keys(b)
    matched = sum((keys_a & keys_b).values())
    return {"agreement": matched / max(1, max(sum(keys_a.values()), sum(keys_b.values()))),
            "rows_only_first": sum((keys_a - keys_b).values()), "rows_only_second": sum((keys_b - keys_a).values())}


def whole_command_only(pair: Any, task: Any, problems: list[Any], args: argparse.Namespace, load_seconds: float) -> None:
    """The straightforward search on the first --plain-limit problems, then the whole `autojudge mine` command
    (new interpreter, Ray, model loading, 1 worker of 1 thread) on all of them; labels compared on the common ones."""
    import tempfile

    plain_problems = problems[: args.plain_limit] if args.plain_limit else problems
    plain = run_straightforward(pair, task, plain_problems, args)
    whole = run_whole_command(args, str(Path(tempfile.mkdtemp(prefix="bench-mine-out-")) / "mined"), args.batch_size)
    plain_ids = {str(p.id) for p in plain_problems}
    same = compare_labels(plain["labels"], [row for row in whole["rows"] if str(row["prompt_id"]) in plain_ids])
    figures = {
        "task": args.task, "target": args.target, "draft": args.draft, "prompts": len(problems), "plain_prompts": len(plain_problems),
        "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "model_load_seconds": load_seconds,
        "plain": {k: plain[k] for k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s", "counters")}
        | {"labels": len(plain["labels"])},
        "whole_command": {k: v for k, v in whole.items() if k != "rows"},
        "speedup_whole_command": whole["labels_per_s"] / plain["labels_per_s"],
        "agreement": same["agreement"], "rows_plain_only": same["rows_only_first"], "rows_fast_only": same["rows_only_second"],
        "important_fraction": sum(r["important"] for r in whole["rows"]) / max(1, len(whole["rows"])),
        "mismatches_per_prompt": len(whole["rows"]) / max(1, len(problems)),
    }
    print(f"{args.task}: {args.target} / {args.draft}; {len(problems)} prompts (baseline on {len(plain_problems)}), budget "
          f"{args.max_new_tokens}")
    print(f"straightforward plain: {len(plain['labels'])} labels in {plain['seconds']:.1f}s = {plain['labels_per_s']:.3f} labels/s wall; "
          f"{plain['cpu_seconds']:.1f} CPU-s = {plain['labels_per_cpu_s']:.3f} labels per CPU-s")
    print(f"whole `autojudge mine --batch-size {args.batch_size}` command (start-up, Ray, model loading, 1 worker): {whole['labels']} "
          f"labels in {whole['seconds']:.1f}s = {whole['labels_per_s']:.3f} labels/s = {figures['speedup_whole_command']:.1f}x the "
          f"straightforward plain search")
    print(f"label agreement {same['agreement']:.2%} (plain-only rows {same['rows_only_first']}, fast-only rows {same['rows_only_second']}); "
          f"important fraction {figures['important_fraction']:.1%}, mismatches per prompt {figures['mismatches_per_prompt']:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_arguments(parser)
    parser.add_argument("--task", default="toy", choices=["toy", "gsm8k"], help="toy (generated) or gsm8k (--input)")
    parser.add_argument("--input", default=None, help="task gsm8k: JSONL (default: the shared GSM8K train file)")
    parser.add_argument("--offset", type=int, default=400, help="task gsm8k: first problem used (default 400, past the draft's fitting data)")
    parser.add_argument("--instruction", default=None,
                        help="text appended to every question (gsm8k default: the real-model instruction, none with --shots)")
    parser.add_argument("--finished-only", action="store_true",
                        help="both methods skip problems whose target answer does not end within the budget (the run preset's rule)")
    parser.add_argument("--shots", type=int, default=0,
                        help="task gsm8k: the train file's first N solved problems as earlier chat turns (the run preset's 5)")
    parser.add_argument("--limit", type=int, default=50, help="prompts")
    parser.add_argument("--seed", type=int, default=1, help="toy: seed of the generated problems")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="searches in flight (all prompts in one wave up to this)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the in-process runs")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="also run the fast miner on these Ray actor counts")
    parser.add_argument("--whole-command", action="store_true", help="also time the whole `autojudge mine` command (1 worker)")
    parser.add_argument("--oracle", action="store_true", help="also run the package's oracle plain_search (uncached features)")
    parser.add_argument("--regen-proposals", type=int, default=None,
                        help="fast miner: draft tokens proposed per round of a regeneration that does not re-align (default: the miner's)")
    parser.add_argument("--plain-limit", type=int, default=None,
                        help="run the (slow) baseline on only the first N prompts; labels are compared on those")
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--fast-only", action="store_true", help="skip the baseline (tuning runs)")
    parser.add_argument("--whole-command-only", action="store_true",
                        help="the baseline and the whole `autojudge mine --batch-size B` command only (its labels are compared): "
                        "no in-process fast run (a real pair at width takes an hour per run)")
    args = parser.parse_args()
    args.target, args.draft = args.target or DEFAULT_TARGET, args.draft or DEFAULT_DRAFT

    import torch

    from autojudge.setup import DecodingConfig, resolve

    if args.task == "gsm8k":
        from autojudge.tasks.gsm8k import GSM8K_INSTRUCTION
        from autojudge.tasks.gsm8k import shared_gsm8k_file

        args.input = args.input or shared_gsm8k_file("train")
        if args.instruction is None and not args.shots:
            args.instruction = GSM8K_INSTRUCTION
    torch.set_num_threads(args.threads)
    load_start = time.perf_counter()
    pair = resolve(DecodingConfig(args.target, args.draft, max_new_tokens=args.max_new_tokens)).load_pair()  # the checked pair
    load_seconds = time.perf_counter() - load_start
    task, problems = load_bench_problems(args)
    if args.whole_command_only:
        whole_command_only(pair, task, problems, args, load_seconds)
        return

    fast = run_in_process(pair, task, problems, args, "fast")
    counters = fast["counters"]
    if args.fast_only:
        c = counters
        print(f"fast: {len(fast['labels'])} labels in {fast['seconds']:.2f}s = {fast['labels_per_s']:.2f} labels/s; "
              f"target {c['target_seconds']:.2f}s/{c['target_forwards']} fwd/{c['target_tokens']} tok, "
              f"draft {c['draft_seconds']:.2f}s/{c['draft_forwards']} fwd/{c['draft_tokens']} tok, {c['ticks']} ticks")
        return
    plain_problems = problems[: args.plain_limit] if args.plain_limit else problems
    plain = run_in_process(pair, task, plain_problems, args, "straightforward")
    oracle = run_in_process(pair, task, plain_problems, args, "plain") if args.oracle else None
    plain_ids = {str(p.id) for p in plain_problems}
    fast_common = [row for row in fast["labels"] if str(row["prompt_id"]) in plain_ids]
    same = compare_labels(plain["labels"], fast_common)
    important = sum(r["important"] for r in plain["labels"])
    prompts = len(plain["responses"])
    mean_len = sum(len(r["initial_response_ids"] or []) for r in plain["responses"]) / max(1, prompts)
    other = fast["seconds"] - counters["target_seconds"] - counters["draft_seconds"] - counters["search_seconds"]
    pc = plain["counters"]
    plain_target_tokens = pc["target_prefill_tokens"] + pc["target_generated_tokens"]
    labels = max(1, len(plain["labels"]))
    figures = {
        "task": args.task, "target": args.target, "draft": args.draft,
        "prompts": len(problems),
        "plain_prompts": prompts,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "model_load_seconds": load_seconds,
        "plain": {k: plain[k] for k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s", "counters")}
        | {"labels": len(plain["labels"]), "target_tokens_per_label": plain_target_tokens / labels},
        "fast": {k: fast[k] for k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s")}
        | {"labels": len(fast["labels"]), "counters": counters, "other_seconds": other,
           "target_tokens_per_label": counters["target_tokens"] / max(1, len(fast["labels"])),
           "target_forwards_per_label": counters["target_forwards"] / max(1, len(fast["labels"]))},
        "speedup": fast["labels_per_s"] / plain["labels_per_s"],
        "speedup_cpu_time": fast["labels_per_cpu_s"] / plain["labels_per_cpu_s"],
        "agreement": same["agreement"],
        "rows_plain_only": same["rows_only_first"],
        "rows_fast_only": same["rows_only_second"],
        "important_fraction": important / labels,
        "mismatches_per_prompt": len(fast["labels"]) / max(1, len(problems)),
        "important_fraction_fast": sum(r["important"] for r in fast["labels"]) / max(1, len(fast["labels"])),
        "mean_initial_response_tokens": mean_len,
        "ray": [run_ray_workers(problems, args, w) for w in args.workers],
    }
    if oracle is not None:
        figures["oracle"] = {k: oracle[k] for k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s")} | {
            "labels": len(oracle["labels"]), "agreement_with_fast": compare_labels(oracle["labels"], fast["labels"])["agreement"]}
    if args.whole_command:
        import tempfile

        figures["whole_command"] = [
            {k: v for k, v in run_whole_command(args, str(Path(tempfile.mkdtemp(prefix="bench-mine-out-")) / "mined"), batch).items()
             if k != "rows"}  # the figures, not the label rows
            for batch in ((None,) if args.batch_size == 64 else (None, args.batch_size))
        ]
        small = argparse.Namespace(**{**vars(args), "batch_size": 16})
        figures["fast_batch_16"] = {k: v for k, v in run_in_process(pair, task, problems, small, "fast").items()
                                    if k in ("seconds", "labels_per_s", "cpu_seconds", "labels_per_cpu_s")}
    print(f"{args.task}: {args.target} / {args.draft}; prompts {len(problems)} (baseline on {prompts}), mean response {mean_len:.1f} tokens, "
          f"budget {args.max_new_tokens}, threads {args.threads}, models loaded in {load_seconds:.1f}s")
    for name, run in (("straightforward plain", plain), ("fast                 ", fast)) + ((("oracle plain         ", oracle),) if oracle else ()):
        print(f"{name}: {len(run['labels'])} labels in {run['seconds']:.1f}s = {run['labels_per_s']:.2f} labels/s wall; "
              f"{run['cpu_seconds']:.1f} CPU-s = {run['labels_per_cpu_s']:.2f} labels per CPU-s")
    print(f"speedup over the straightforward plain search {figures['speedup']:.1f}x wall, {figures['speedup_cpu_time']:.1f}x CPU time "
          f"(batch {args.batch_size}); label agreement {same['agreement']:.2%} "
          f"(plain-only rows {figures['rows_plain_only']}, fast-only rows {figures['rows_fast_only']})")
    print(f"important fraction {figures['important_fraction']:.1%}, mismatches per prompt {figures['mismatches_per_prompt']:.2f}")
    print(f"target tokens per label: plain {figures['plain']['target_tokens_per_label']:.1f} "
          f"({pc['generate_calls']} generate calls: {pc['target_generated_tokens']} generated + {pc['target_prefill_tokens']} prefill tokens, "
          f"{pc['target_generate_seconds']:.1f}s; draft {pc['draft_tokens']} tokens {pc['draft_seconds']:.1f}s), "
          f"fast {figures['fast']['target_tokens_per_label']:.1f} ({figures['fast']['target_forwards_per_label']:.2f} batched forwards per label)")
    print(
        f"fast profile: target {counters['target_seconds']:.2f}s in {counters['target_forwards']} forwards "
        f"({counters['target_tokens']} tokens), draft {counters['draft_seconds']:.2f}s in {counters['draft_forwards']} "
        f"forwards ({counters['draft_tokens']} tokens), search logic + E {counters['search_seconds']:.2f}s, "
        f"other (tokenize, rows) {other:.2f}s; {counters['ticks']} ticks"
    )
    for ray_run in figures["ray"]:
        print(f"fast on {ray_run['workers']} Ray worker(s): {ray_run['labels']} labels in {ray_run['seconds']:.1f}s "
              f"= {ray_run['labels_per_s']:.2f} labels/s")
    for whole in figures.get("whole_command", []):
        print(f"whole `autojudge mine --batch-size {whole['batch_size']}` command (start-up, Ray, model loading, 1 worker): "
              f"{whole['labels']} labels in {whole['seconds']:.1f}s = {whole['labels_per_s']:.2f} labels/s = "
              f"{whole['labels_per_s'] / plain['labels_per_s']:.1f}x the straightforward plain search")
    if "fast_batch_16" in figures:
        f16 = figures["fast_batch_16"]
        print(f"pipeline only (models loaded): batch {args.batch_size} {fast['labels_per_s']:.2f} labels/s "
              f"({fast['seconds']:.1f}s), batch 16 {f16['labels_per_s']:.2f} labels/s ({f16['seconds']:.1f}s); "
              f"model loading in this process {load_seconds:.1f}s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
