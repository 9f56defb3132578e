"""Which mined mismatches each acceptance rule would accept, and how many of those change the answer.

The held-out curve (`autojudge run`, `autojudge eval`) says which rule buys the most tokens per target call
at equal agreement; this bench says why, one mismatch at a time. For every labelled mismatch of the judge's
validation prompts (the prompt split `train_judge` made, reproduced from the judge's seed and checked
against the labels it was trained on) it asks each rule what it would do if the draft proposed the
mismatching token there, followed by the draft's own greedy continuation, in the context the label was
mined in: the prompt and the final response up to the mismatch (the semi-greedy search never changes a
response before a mismatch it has decided, so that prefix is the one the label was mined with).

The rules are the engine's own (`decode.engine.acceptance`, one function per rule); FLy sees the draft's
next `--fly-window` tokens verified in the same pass (its best case: a mismatch at the end of a proposal
is left to exact matching in decoding). The judge's probability comes from the label's stored features.

Prints, on those mismatches: per score (the judge's probability, the target's probability of the draft
token, FLy's top-3 entropy) the ROC AUC of telling unimportant from important mismatches; per rule and
parameter the share of mismatches accepted and the share of the accepted that are important (each one
changes the answer when accepted alone); and the judge at the same acceptance share (its most confident
mismatches), so each training-free rule is compared with the judge at equal acceptance.

    PYTHONPATH=. python bench/rules_on_labels.py --data RUN/mined --judge RUN/judge --max-prompts 60
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from typing import Any

import numpy as np
import torch


def validation_rows(data: Any, judge: Any, max_prompts: int | None) -> Any:
    """The labels of the judge's validation prompts (the first `max_prompts` of them, sorted by id)."""
    from autojudge.errors import InputError
    from autojudge.pipeline.dataset import split_by_prompt

    settings = judge.settings
    if settings.get("data_fingerprint") != data.fingerprint():
        raise InputError("the judge was trained on other labels than this folder holds (data_fingerprint differs): "
                         "give the mining folder it was trained on")
    _, val_mask = split_by_prompt(data.prompt_ids, data.important, settings["val_fraction"], settings["seed"])
    val = data.subset(val_mask)
    prompts = sorted(set(val.prompt_ids.tolist()))[:max_prompts]
    return val.subset(np.isin(val.prompt_ids, prompts))


def continuation_logits(pair: Any, ids: list[int], start: int, first_draft: int, length: int,
                        target_cache: Any, draft_cache: Any, target_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(draft tokens `[1, length]`: `first_draft` then the draft's greedy continuation, target logits `[1, length, V]`
    at those positions), for a proposal starting at position `start` of `ids`. The caches hold `ids` (copied and
    cut back to `start` here); `target_next` is the target's logits at `start` (from the whole-sequence forward)."""
    draft_cache, target_cache = copy.deepcopy(draft_cache), copy.deepcopy(target_cache)
    draft_cache.crop(start - len(ids))  # a negative count: the tokens removed from the end
    target_cache.crop(start - len(ids))
    tokens = [first_draft]
    for _ in range(length - 1):  # the draft's greedy continuation after its own token
        out = pair.draft(torch.tensor([tokens[-1:]]), cache=draft_cache, use_cache=True)
        draft_cache = out.cache
        tokens.append(int(out.logits[0, -1].argmax()))
    verify = pair.target(torch.tensor([tokens[:-1]]), cache=target_cache, use_cache=True).logits  # [1, length-1, V]
    return torch.tensor([tokens]), torch.cat([target_next[None, None], verify], dim=1)


def rule_inputs(pair: Any, rows: Any, responses: dict[str, dict[str, Any]], fly_window: int) -> dict[str, Any]:
    """Per mismatch: the draft proposal `[n, k]` and the target's logits over it (`k = fly_window + 1`, so FLy decides
    position 0), and whether the target's greedy token in that context is the label's target token."""
    proposals, logits, agrees = [], [], []
    k = fly_window + 1
    for prompt_id in dict.fromkeys(rows.prompt_ids.tolist()):  # problems in order, each once
        response = responses[prompt_id]
        ids = list(response["prompt_token_ids"]) + list(response["final_response_ids"])
        with torch.inference_mode():
            target_out = pair.target(torch.tensor([ids]), use_cache=True)
            draft_out = pair.draft(torch.tensor([ids]), use_cache=True)
            for index in np.flatnonzero(rows.prompt_ids == prompt_id):
                start = len(response["prompt_token_ids"]) + int(rows.positions[index])
                target_next = target_out.logits[0, start - 1]
                agrees.append(int(target_next.argmax()) == int(rows.target_tokens[index]))
                draft_tokens, target_logits = continuation_logits(
                    pair, ids, start, int(rows.draft_tokens[index]), k, target_out.cache, draft_out.cache,
                    target_next)
                proposals.append(draft_tokens)
                logits.append(target_logits)
    return {"draft_tokens": torch.cat(proposals), "target_logits": torch.cat(logits), "context_agrees": np.array(agrees)}


def roc_auc(safe_score: np.ndarray, important: np.ndarray) -> float:
    """ROC AUC of `safe_score` ranking unimportant mismatches above important ones (0.5 = no better than chance)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(~important, safe_score)) if 0 < important.sum() < len(important) else float("nan")


def judge_at_share(judge_prob: np.ndarray, important: np.ndarray, share: float) -> float | None:
    """Important share among the judge's `share` most confident (lowest probability) mismatches."""
    count = int(round(share * len(judge_prob)))
    if count == 0:
        return None
    return float(important[np.argsort(judge_prob, kind="stable")[:count]].mean())


def main() -> None:
    from autojudge.decode.engine.acceptance import build_rule, draft_token_probs, top3_entropy
    from autojudge.judge import Judge
    from autojudge.pipeline.dataset import read_mined
    from autojudge.pipeline.shards import read_responses
    from autojudge.setup import DecodingConfig, resolve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="mining folder the judge was trained on")
    parser.add_argument("--judge", required=True, help="judge folder (from `autojudge train` or RUN/judge)")
    parser.add_argument("--max-prompts", type=int, default=None, help="validation prompts to use (default all)")
    parser.add_argument("--fly-window", type=int, default=3, help="FLy's window (the run's preset: 3)")
    parser.add_argument("--fly-entropies", default="0.6,0.3,0.1", help="FLy entropy thresholds")
    parser.add_argument("--typical-epsilons", default="0.3,0.09", help="typical acceptance epsilons")
    parser.add_argument("--min-probs", default="0.3,0.1", help="prob rule thresholds")
    parser.add_argument("--top-ks", default="2", help="topk rule K values")
    parser.add_argument("--taus", default="", help="judge thresholds (default: the judge's default tau)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    judge = Judge.load(args.judge)
    data = read_mined(args.data)
    rows = validation_rows(data, judge, args.max_prompts)
    pair_ids = data.manifest["target"], data.manifest["draft"]
    pair = resolve(DecodingConfig(*pair_ids)).load_pair()
    responses = {row["prompt_id"]: row for row in read_responses(args.data).to_pylist()}
    start = time.perf_counter()
    inputs = rule_inputs(pair, rows, responses, args.fly_window)
    seconds = time.perf_counter() - start
    important = rows.important.astype(bool)
    draft_tokens, target_logits = inputs["draft_tokens"], inputs["target_logits"]
    judge_prob = judge.predict_hidden(rows.h_target, rows.h_draft)
    draft_prob, _ = draft_token_probs(draft_tokens[:, :1], target_logits[:, :1])
    entropy = top3_entropy(target_logits[:, :1])[:, 0].numpy()
    n, prompts = len(rows), len(set(rows.prompt_ids.tolist()))
    print(f"{n} validation mismatches of {prompts} prompts ({important.mean():.1%} important), pair {pair_ids[0]} / "
          f"{pair_ids[1]}, {seconds:.0f} s; the target's greedy token in the rebuilt context is the label's in "
          f"{inputs['context_agrees'].sum()} of {n}")
    aucs = {"judge (1 - p_important)": roc_auc(-judge_prob, important),
            "target probability of the draft token": roc_auc(draft_prob[:, 0].numpy(), important),
            "top-3 entropy of the target (FLy's)": roc_auc(entropy, important)}
    print("\nROC AUC, unimportant vs important mismatches:")
    for name, value in aucs.items():
        print(f"  {name:40s} {value:.3f}")

    def numbers(text: str) -> list[float]:
        return [float(part) for part in text.split(",") if part.strip()]

    taus = numbers(args.taus) or [judge.default_threshold]
    rules = [(f"autojudge tau={tau:g}", build_rule("autojudge", judge=judge, threshold=tau)) for tau in taus]
    rules += [(f"fly H={h:g} w={args.fly_window}", build_rule("fly", fly_entropy=h, fly_window=args.fly_window))
              for h in numbers(args.fly_entropies)]
    rules += [(f"typical eps={e:g}", build_rule("typical", epsilon=e)) for e in numbers(args.typical_epsilons)]
    rules += [(f"prob p={p:g}", build_rule("prob", min_prob=p)) for p in numbers(args.min_probs)]
    rules += [(f"topk K={int(k)}", build_rule("topk", top_k=int(k))) for k in numbers(args.top_ks)]
    h_target = torch.as_tensor(rows.h_target)[:, None].expand(-1, draft_tokens.shape[1], -1)
    h_draft = torch.as_tensor(rows.h_draft)[:, None].expand(-1, draft_tokens.shape[1], -1)
    print("\n| rule | mismatches accepted | important among the accepted | judge at the same share: important among its accepted |")
    print("|---|---:|---:|---:|")
    table = []
    for name, rule in rules:
        accepted = rule(draft_tokens, target_logits, h_target, h_draft)[:, 0].numpy()
        share = float(accepted.mean())
        harm = float(important[accepted].mean()) if accepted.any() else None
        same = judge_at_share(judge_prob, important, share)
        table.append({"rule": name, "accepted": share, "important_among_accepted": harm, "judge_at_same_share": same})
        print(f"| {name} | {share:.1%} ({int(accepted.sum())}) | {'-' if harm is None else f'{harm:.1%}'} | "
              f"{'-' if same is None or name.startswith('autojudge') else f'{same:.1%}'} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"mismatches": n, "prompts": prompts, "important": float(important.mean()), "auc": aucs,
                       "rules": table, "context_agrees": int(inputs["context_agrees"].sum()), "seconds": seconds},
                      handle, indent=2)


if __name__ == "__main__":
    main()
