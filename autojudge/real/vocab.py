"""Reduced-vocabulary SmolLM2 drafts (`smollm2:draft-v8k`, `smollm2:draft-L8-fit-v4096`, ...).

The kept tokens are the most frequent in the *target's own greedy responses* to GSM8K train
prompts (the responses the draft fit already generated and cached), then in GSM8K train text
(questions and reference solutions, calculator annotations removed, as the fit uses them),
then the lowest ids (BPE merge order), plus every special token of the tokenizer (EOS, the
chat template's `<|im_start|>` / `<|im_end|>`). Test prompts are never read.

The folder is the base draft's folder (files hard-linked where the file system allows) plus
`draft_vocab.json`, so `load_model` gives it the reduced head (`autojudge.draft_vocab`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from autojudge.draft_vocab import coverage, select_draft_vocab, write_draft_vocab

TARGET_WEIGHT = 1000.0
"""Weight of a token seen in the target's responses relative to one seen in GSM8K train text."""


def parse_vocab_size(text: str) -> int:
    """`8k` -> 8192, `8192` -> 8192 (k = 1024)."""
    match = re.fullmatch(r"(\d+)(k?)", text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"bad draft vocabulary size {text!r}: use e.g. 8k or 8192")
    return int(match.group(1)) * (1024 if match.group(2) else 1)


def gsm8k_train_text_ids(tokenizer: Any, source: str) -> list[list[int]]:
    """Token ids of every GSM8K train question and reference solution (calculator annotations removed)."""
    import json

    sequences = []
    with open(source) as handle:
        for line in handle:
            record = json.loads(line)
            answer = re.sub(r"<<[^>]*>>", "", record.get("answer", ""))
            answer = re.sub(r"\n?#### *(.+)$", r"\nThe final answer is \1.", answer.strip())
            for text in (record.get("question", ""), answer):
                sequences.append(tokenizer(text, add_special_tokens=False).input_ids)
    return sequences


def link_folder(source: Path, destination: Path) -> None:
    """Copy a folder's files, hard-linking them where possible (no extra disk for the weights)."""
    destination.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file():
            try:
                os.link(item, destination / item.name)
            except OSError:
                shutil.copy2(item, destination / item.name)


def build_reduced_draft(base_folder: Path, size: int, name: str, cache: Path | None = None, force: bool = False, log: Any = print) -> Path:
    """The folder `name` (under the SmolLM2 cache): `base_folder`'s draft with a `size`-token head."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autojudge.real.data import cached_target_responses, default_gsm8k
    from autojudge.real.fit import FitConfig
    from autojudge.real.smollm2 import convert_target, is_hf_folder, model_root

    folder = model_root(cache) / name
    if is_hf_folder(folder) and (folder / "draft_vocab.json").exists() and not force:
        return folder
    target_dir = convert_target(cache)
    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    fit = FitConfig()
    source = str(default_gsm8k("train"))
    responses_file = model_root(cache) / "responses" / f"gsm8k-train-{fit.prompts}-{fit.max_new_tokens}.json"
    if responses_file.exists():
        import json

        responses = json.loads(responses_file.read_text())["responses"]
    else:  # the fit's responses are not cached (a draft that was not fitted): generate them once
        target = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
        _, responses = cached_target_responses(target, tokenizer, source, fit.prompts, fit.max_new_tokens, responses_file,
                                               progress=f"draft vocabulary: target responses to {fit.prompts} prompts")
    text = gsm8k_train_text_ids(tokenizer, source)
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    special |= {tokenizer.convert_tokens_to_ids(token) for token in ("<|im_start|>", "<|im_end|>") if token in tokenizer.get_vocab()}
    ids = select_draft_vocab([(TARGET_WEIGHT, responses), (1.0, text)], size, vocab_size, always=special)
    # held out: the same choice without the last responses, scored on them (the kept data covers itself fully)
    held_out = max(1, len(responses) // 6)
    held_out_ids = select_draft_vocab([(TARGET_WEIGHT, responses[:-held_out]), (1.0, text)], size, vocab_size, always=special)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    link_folder(base_folder, staging)
    (staging / "draft_vocab.json").unlink(missing_ok=True)
    seen = len({token for row in responses for token in row} | {token for row in text for token in row})
    write_draft_vocab(
        staging, ids, base=base_folder.name,
        source=f"target greedy responses to {len(responses)} GSM8K train prompts (weight {TARGET_WEIGHT:g}), "
        f"then {len(text)} GSM8K train questions/solutions, then lowest ids; plus special tokens",
        distinct_tokens_seen=seen, held_out_responses=held_out,
        held_out_coverage=round(coverage(held_out_ids, responses[-held_out:]), 4),
    )  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    log(f"draft vocabulary: {len(ids)} of {vocab_size} tokens ({seen} distinct seen in the data; "
        f"{coverage(held_out_ids, responses[-held_out:]):.4f} of held-out target response tokens covered) -> {folder}")
    return folder
