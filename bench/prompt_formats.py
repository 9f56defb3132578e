"""Which GSM8K prompt format lets the target's greedy answers finish inside the budget?

    PYTHONPATH=. python bench/prompt_formats.py --num 64 --budget 256 --formats chat,shots3,shots5,lighteval5
    PYTHONPATH=. python bench/prompt_formats.py --target smollm2:target@bf16 --formats shots3

Formats (the examples are the first N problems of the GSM8K train file, calculator annotations removed):
- `chat`: one user turn, the question and the instruction 'Solve the problem step by step, then end with
  "The final answer is N".' (the real-model set-up before few-shot prompts);
- `shotsN`: the task's few-shot format (`autojudge ... --task gsm8k --shots N`): N solved problems as earlier
  user/assistant turns of the chat template, then the question; an answer ends with its end-of-turn token;
- `lightevalN`: lighteval's plain GSM8K format, N examples as "Question: ...\\nAnswer: ...#### N" blocks,
  generation stopped at "\\nQuestion:" (a stop string).

For each: how many of the first `--num` GSM8K test problems get a greedy answer that ends (EOS or the stop
string) with a parseable final answer (`#### N` or "The final answer is N") within each budget, the mean
length of those answers, the accuracy, and the prompt length. Plain greedy decoding by the engine
(window 0), batch 16, 1 thread.
"""

from __future__ import annotations

import argparse
import re
import time

BUDGETS = (64, 96, 128, 160, 192, 256)
FINAL = re.compile(r"####\s*-?\$?[\d,.]+|final answer is", re.IGNORECASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smollm2:target", help="target model spec (e.g. smollm2:target@bf16)")
    parser.add_argument("--num", type=int, default=64, help="GSM8K test problems")
    parser.add_argument("--budget", type=int, default=256, help="largest generation budget")
    parser.add_argument("--formats", default="chat,shots3,shots5,lighteval5", help="comma-separated formats")
    args = parser.parse_args()

    import torch

    from autojudge.tasks.gsm8k import GSM8K_INSTRUCTION
    from autojudge.decode.engine.core import EngineCore, RequestSettings
    from autojudge.models import load_model, load_tokenizer
    from autojudge.tasks import build_task
    from autojudge.tasks.answers import extract_answer
    from autojudge.tasks.gsm8k import clean_solution, load_problems, shared_gsm8k_file

    torch.set_num_threads(1)
    tokenizer = load_tokenizer(args.target)
    model = load_model(args.target)
    problems = load_problems(shared_gsm8k_file("test"), limit=args.num)
    train = load_problems(shared_gsm8k_file("train"), limit=32)

    def prompt(fmt: str, problem: object) -> tuple[str, tuple[str, ...]]:
        if fmt == "chat":
            return build_task("gsm8k", instruction=GSM8K_INSTRUCTION).render_prompt(problem, tokenizer), ()
        shots = int(re.sub(r"\D", "", fmt))
        if fmt.startswith("shots"):
            return build_task("gsm8k", shots=shots).render_prompt(problem, tokenizer), ()
        shown = "".join(f"Question: {p.question}\nAnswer: {clean_solution(p.answer or '')}\n\n" for p in train[:shots])
        return shown + f"Question: {problem.question}\nAnswer:", ("\nQuestion:",)

    print(f"{args.target}, {len(problems)} GSM8K test problems, greedy, budget {args.budget}")
    for fmt in args.formats.split(","):
        rendered = [prompt(fmt, p) for p in problems]
        ids = [list(tokenizer(text, add_special_tokens=False).input_ids) for text, _ in rendered]
        engine = EngineCore(model, model, tokenizer=tokenizer, eos_token_ids=tokenizer.eos_token_id, default_window=0, max_batch=16)
        start = time.perf_counter()
        results = engine.generate(ids, RequestSettings(max_new_tokens=args.budget, window=0, stop_strings=rendered[0][1]))
        seconds = time.perf_counter() - start
        finished, correct = [], 0
        for problem, result in zip(problems, results):
            text = tokenizer.decode(result.token_ids, skip_special_tokens=True)
            if result.stop_reason in ("eos", "stop_string") and FINAL.search(text):
                finished.append(len(result.token_ids))
            correct += extract_answer(text) == extract_answer(problem.answer or "")
        within = ", ".join(f"{b}: {sum(n <= b for n in finished)}" for b in BUDGETS if b <= args.budget)
        mean = sum(finished) / max(len(finished), 1)
        print(f"{fmt:12s} prompt {min(map(len, ids))}-{max(map(len, ids))} tokens; finished with a final answer within "
              f"budget {within} (of {len(problems)}); their mean length {mean:.1f} tokens; accuracy {correct}/{len(problems)}; "
              f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
