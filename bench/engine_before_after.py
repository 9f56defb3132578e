"""The engine core against the engine it replaced, in one process, on the same prompts.

    PYTHONPATH=. python bench/engine_before_after.py --before 2190c88 --num-prompts 24 --batch-sizes 1 8

The old engine (`autojudge/decode/{engine,forward,acceptance,metrics}.py` at commit `--before`)
is read with `git show` into a temporary package, so both run side by side in this process
with the shipped toy pair, exact mode, window 8. The two alternate `--repeats` times; the
minimum of each is reported by wall clock and by this process's CPU time (the steadier figure
on a shared machine). Outputs must be identical (checked). The old engine decodes in fixed
batches of `batch size` prompts; the core keeps at most that many rows and refills freed rows
at once (continuous batching).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OLD_FILES = ("engine", "forward", "acceptance", "metrics")


def load_old_engine(commit: str, folder: Path):
    """The old `SpeculativeEngine` and `ExactRule`, from `git show COMMIT:autojudge/decode/*.py`."""
    package = folder / "old_engine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in OLD_FILES:
        source = subprocess.run(["git", "show", f"{commit}:autojudge/decode/{name}.py"], capture_output=True, text=True, check=True).stdout
        (package / f"{name}.py").write_text(source.replace("autojudge.decode.", "old_engine."))
    sys.path.insert(0, str(folder))
    from old_engine.acceptance import ExactRule
    from old_engine.engine import SpeculativeEngine

    return SpeculativeEngine, ExactRule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="2190c88", help="commit of the old engine (default 2190c88)")
    parser.add_argument("--num-prompts", type=int, default=24)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    import torch

    from autojudge.decode import EngineCore, RequestSettings
    from autojudge.models import eos_token_ids
    from autojudge.setup import DecodingConfig, resolve
    from autojudge.tasks import get_task
    from autojudge.tasks.base import Problem
    from autojudge.toy.world import generate_problems

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        SpeculativeEngine, ExactRule = load_old_engine(args.before, Path(folder))
        setup = resolve(DecodingConfig(max_new_tokens=args.max_new_tokens))  # the toy pair at the default window
        pair, window = setup.load_pair(), setup.window
        task = get_task("toy")
        problems = [Problem(id=r["id"], question=r["question"]) for r in generate_problems(args.num_prompts, seed=2)]
        prompts = [task.prompt_ids(p, pair.tokenizer) for p in problems]
        eos = eos_token_ids(pair.tokenizer, pair.target, pair.draft)
        print(f"{args.num_prompts} toy prompts, window {window}, exact, max_new_tokens {args.max_new_tokens}, 1 thread, "
              f"old engine from {args.before}; min of {args.repeats}")
        for batch in args.batch_sizes:
            old = SpeculativeEngine(pair.target, pair.draft, ExactRule(), window=window, eos_token_ids=eos, pad_token_id=0)
            new = EngineCore.for_pair(pair, default_window=window, max_batch=batch)

            def run_old() -> list[list[int]]:
                out: list[list[int]] = []
                for start in range(0, len(prompts), batch):
                    out += [r.token_ids for r in old.generate(prompts[start : start + batch], args.max_new_tokens)]
                return out

            def run_new() -> list[list[int]]:
                return [r.token_ids for r in new.generate(prompts, RequestSettings(max_new_tokens=args.max_new_tokens))]

            if run_old() != run_new():
                raise SystemExit("outputs differ between the old engine and the core")
            wall: dict[str, list[float]] = {"old": [], "new": []}
            cpu: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                for name, run in (("old", run_old), ("new", run_new)):
                    start, cpu_start = time.perf_counter(), time.process_time()
                    run()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - cpu_start)
            print(f"batch {batch}: wall old {min(wall['old']):.2f} s, core {min(wall['new']):.2f} s "
                  f"(core/old {min(wall['new']) / min(wall['old']):.2f}); CPU old {min(cpu['old']):.2f} s, "
                  f"core {min(cpu['new']):.2f} s (core/old {min(cpu['new']) / min(cpu['old']):.2f}); outputs identical")


if __name__ == "__main__":
    main()
