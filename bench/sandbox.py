"""Per-run cost of the sandbox's isolation: the same tiny program under each mode, side by side.

    python bench/sandbox.py --runs 20

Modes (root only for the last three): no uid drop, no namespaces, no cgroup (the
"always" guarantees); uid drop only; uid drop + cgroup; uid drop + cgroup + namespaces
(the default under root where the kernel allows it).
"""

from __future__ import annotations

import argparse
import time

from autojudge.tasks.sandbox import SandboxLimits, run_python

MODES = {
    "rlimits only": SandboxLimits(drop_privileges=False, isolate_namespaces=False, use_cgroup=False),
    "+ uid drop": SandboxLimits(isolate_namespaces=False, use_cgroup=False),
    "+ cgroup": SandboxLimits(isolate_namespaces=False),
    "+ namespaces (default)": SandboxLimits(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    program = "print(sum(range(1000)))\n"
    for name, limits in MODES.items():
        start = time.perf_counter()
        for _ in range(args.runs):
            result = run_python(program, limits)
            assert result.passed, result
        per_run = (time.perf_counter() - start) / args.runs
        print(f"{name:24s} {1000 * per_run:6.0f} ms per run  (namespaces={result.namespaces}, cgroup={result.cgroup}, "
              f"uid={'dropped' if result.uid else 'same'})")


if __name__ == "__main__":
    main()
