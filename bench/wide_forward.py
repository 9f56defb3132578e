"""One target forward at many rows: float32 vs bfloat16, per-row attention vs the shared header read once.

    PYTHONPATH=. python bench/wide_forward.py --rows 1 16 64 128 --context 700

Every row holds the same `--context` tokens (as rows behind one few-shot header do) and feeds one token;
the forward is `cache.forward_rows` through the lean decoder. "per-row" attends to each row's own copy of
the context (the flash-attention kernel per row); "shared" marks the context as the cache's shared prefix
(`RowKVCache.load_row(..., shared=True)`), so `lean.prefix_attention` reads it once for all rows. Prints
the CPU time of the calling thread per forward (best of 3 after a warm-up; 1 torch thread, so the thread
does all the work and other processes on the machine do not inflate it) and tokens per CPU-second.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smollm2:target", help="model spec (without @dtype)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--context", type=int, default=700, help="tokens every row holds before the fed one")
    args = parser.parse_args()

    import torch

    from autojudge.decode.engine.cache import RowKVCache, forward_rows
    from autojudge.models import load_model

    torch.set_num_threads(1)
    context = torch.randint(100, 40000, (args.context,), generator=torch.Generator().manual_seed(0)).tolist()
    print(f"{args.target}, {args.context}-token context per row, one token fed per row, 1 thread (CPU ms per forward)")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = load_model(args.target, dtype=dtype)
        for rows in args.rows:
            figures = []
            for shared in (False, True):
                cache = RowKVCache(model, rows, args.context + 8)
                forward_rows(model, cache, [0], [context], last=[1])
                snapshot = cache.snapshot_row(0, args.context)
                times = []
                for _ in range(4):
                    for row in range(rows):
                        cache.load_row(row, snapshot, args.context, shared=shared)
                    start = time.thread_time()
                    forward_rows(model, cache, list(range(rows)), [[500]] * rows)
                    times.append(time.thread_time() - start)
                best = min(times[1:])
                figures.append(f"{'shared' if shared else 'per-row'} {best * 1000:7.1f} ms = {rows / best:6.0f} tokens/s")
            print(f"{name} rows {rows:4d}: " + ";  ".join(figures), flush=True)


if __name__ == "__main__":
    main()
