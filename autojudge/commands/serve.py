"""`autojudge serve`: an OpenAI-compatible HTTP endpoint for speculative decoding on Ray Serve."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from autojudge.commands import (
    DEFAULT_TOP_K, DEFAULT_WINDOW, RULE_MODES, add_budget_argument, add_fly_window_argument, add_pair_arguments, add_window_argument,
)
from autojudge.ray_utils import add_ray_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (Ray Serve) with continuous batching and speculative stats",
        description=(
            "Serve the target with the draft speculating, behind POST /v1/completions, POST /v1/chat/completions "
            "(stream: true for server-sent events), GET /v1/models, GET /health and GET /metrics (Prometheus). "
            "Greedy decoding only (temperature 0). Requests may choose mode, threshold and window in an "
            "'autojudge' object or as top-level fields. Runs until Ctrl-C or SIGTERM, then stops everything it started and exits 0."
        ),
    )
    parser.add_argument("--judge", metavar="JUDGE_DIR", help="judge folder from `autojudge train` (enables mode autojudge)")
    add_pair_arguments(parser, judge=True)
    parser.add_argument("--mode", default="exact", metavar="MODE",
                        help=f"default acceptance rule of requests that name none: {', '.join(RULE_MODES)} (default exact)")
    parser.add_argument("--threshold", type=float, metavar="X",
                        help="default parameter of that rule: the judge threshold tau (default: the judge's), typical's "
                             "epsilon, prob's least probability or FLy's entropy threshold (default: the rule's)")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help=f"K of mode topk (default {DEFAULT_TOP_K})")
    add_fly_window_argument(parser)
    add_window_argument(parser, default_help=f"the judge's window, else {DEFAULT_WINDOW}; 0: no speculation",
                        extra_help=", for requests that name none")
    parser.add_argument("--max-batch", type=int, default=32, metavar="N", help="rows decoded together per replica (default 32)")
    parser.add_argument("--max-waiting", type=int, default=64, metavar="N",
                        help="requests that may wait for a row per replica; more get 503 (default 64)")
    parser.add_argument("--speculation-max-batch", type=int, default=None, metavar="N",
                        help="a request arriving when N or more rows run or wait decodes without speculation (default: never)")
    add_budget_argument(parser, "--max-tokens", what="budget of requests that give no max_tokens")
    parser.add_argument("--engine-nice", type=int, default=-10, metavar="N",
                        help="CPU priority of each replica's engine process relative to the replica (nice increment, -20..19): "
                             "negative keeps request handling from delaying a running cycle; lowering needs root or "
                             "CAP_SYS_NICE, else it is left as is with a warning (default -10; 0: unchanged)")
    parser.add_argument("--stream-interval", type=int, default=1, metavar="N",
                        help="streaming: after the first chunk, send a request's tokens once N are ready (or it ends); "
                             "fewer, larger chunks cost the server less per token under load (default 1: every engine cycle)")
    parser.add_argument("--model-name", default=None, help="model name in the API (default: the --target spec)")
    parser.add_argument("--num-replicas", type=int, default=1, metavar="R", help="decode replicas (default 1)")
    parser.add_argument("--gpus-per-replica", type=float, default=0.0, metavar="G", help="GPUs per replica (default 0)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs per replica (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per replica (default 1)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H", help="HTTP address (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, metavar="P", help="HTTP port (default 8000)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log a line per request (Serve's access log)")
    parser.add_argument("--no-high-throughput", action="store_true",
                        help="a local cluster this command starts uses Serve's default Python HTTP proxy and data plane "
                             "instead of its high-throughput mode (HAProxy ingress, gRPC between deployments)")
    add_ray_arguments(parser)
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> "DecodeSetup":  # noqa: F821 - lazy import
    """Every option, the port and the cluster address, then the decoding setup (`setup.resolve_setup`:
    the pair's tokenizers and the judge, read once, and the judge against the pair), before Ray or any
    model starts."""
    from autojudge import checks
    from autojudge.errors import InputError
    from autojudge.ray_utils import check_cluster_address
    from autojudge.setup import resolve_setup

    checks.check_options(args, at_least_1=["max_batch", "num_replicas", "threads", "speculation_max_batch", "stream_interval"],
                         at_least_0=["max_waiting", "gpus_per_replica", "cpus_per_replica"], thresholds=["threshold"],
                         ports=["port"])
    checks.check_fly_parameters([], args.fly_window)  # a request may choose mode fly
    if not (args.address or os.environ.get("RAY_ADDRESS")):  # a local cluster: the replicas run on these cores
        checks.check_options(args, threads=["threads"])
    if not -20 <= args.engine_nice <= 19:
        raise InputError(f"--engine-nice must be between -20 and 19, got {args.engine_nice}")
    check_cluster_address(args.address)
    check_port_free(args.host, args.port)
    return resolve_setup(args, judge_any_mode=True, least_window=0, budget="max_tokens")


def check_port_free(host: str, port: int) -> None:
    """The HTTP port can be bound (else Serve's proxy would fail to start, far less clearly). A
    process holding it is named; an orphaned HAProxy of an earlier Ray Serve (its Ray worker gone,
    as a server SIGKILLed before autojudge-haproxy tied HAProxy to it leaves one) is stopped."""
    import socket

    from autojudge.errors import InputError

    for attempt in range(2):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT of a stopped one is no obstacle
            try:
                sock.bind((host, port))
                return
            except OSError as err:
                reason = err.strerror
        holder = port_holder(port)
        if attempt == 0 and holder is not None and is_orphaned_serve_haproxy(holder):
            print(f"stopping HAProxy pid {holder.pid}, left by an earlier Ray Serve, which holds port {port}", file=sys.stderr)
            stop_process(holder)
            continue
        held = f"; held by {describe(holder)}" if holder is not None else ""
        raise InputError(f"--host {host} --port {port}: cannot listen there ({reason}{held}); choose another --port")


def port_holder(port: int) -> "psutil.Process | None":  # noqa: F821
    """The process listening on TCP `port` (any address), if this user may see it."""
    import psutil

    try:
        connections = psutil.net_connections(kind="inet")
    except psutil.Error:
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                return psutil.Process(conn.pid)
            except psutil.Error:
                return None
    return None


def describe(process: "psutil.Process") -> str:  # noqa: F821
    """'pid 123 (haproxy -db -f /tmp/...)': a process in a few words."""
    import psutil

    try:
        command = " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        command = "?"
    return f"pid {process.pid} ({command[:120]})"


def is_orphaned_serve_haproxy(process: "psutil.Process") -> bool:  # noqa: F821
    """An HAProxy that Ray Serve started (its config under `haproxy-serve/`), of this user, whose
    parent is no longer Ray's HAProxyManager actor: nothing will ever stop it."""
    import os

    import psutil

    try:
        command = process.cmdline()
        parent = process.parent()
        parent_name = parent.name() if parent is not None else ""
        ours = process.uids().real == os.getuid()
    except psutil.Error:
        return False
    serve_haproxy = bool(command) and os.path.basename(command[0]) == "haproxy" and any("haproxy-serve" in arg for arg in command)
    return serve_haproxy and ours and "HAProxyManager" not in parent_name


def stop_process(process: "psutil.Process", timeout_s: float = 5.0) -> None:  # noqa: F821
    """SIGTERM, then SIGKILL after `timeout_s`."""
    import psutil

    try:
        process.terminate()
        process.wait(timeout_s)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)
    except psutil.NoSuchProcess:
        pass


def config_from_args(args: argparse.Namespace, setup: "DecodeSetup") -> "ServeConfig":  # noqa: F821
    from autojudge.actors.server import ReplicaConfig
    from autojudge.pipeline.serve import ServeConfig

    replica = ReplicaConfig(
        decoding=setup.config, max_batch=args.max_batch, max_waiting=args.max_waiting,
        speculation_max_batch=args.speculation_max_batch, model_name=args.model_name, threads=args.threads,
        stream_interval=args.stream_interval, engine_nice=args.engine_nice,
    )  # fmt: skip
    return ServeConfig(
        replica=replica, num_replicas=args.num_replicas, gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica, host=args.host, port=args.port, address=args.address,
        access_log=not args.no_access_log, high_throughput=not args.no_high_throughput,
    )  # fmt: skip


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM as SIGINT: KeyboardInterrupt, the one exception Ray's blocking calls (ray.get) let
    through from a signal handler (another one comes out as a SystemError)."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT (Ctrl-C) or SIGTERM, then stop everything this command started and return
    0, whenever the signal comes (a second one while it stops is ignored)."""
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, interrupt) for signum in signals}  # kept through ray.init (init_ray)
    config = None
    try:
        setup = check_args(args)  # before the heavy imports and any work
        from autojudge.errors import InputError
        from autojudge.pipeline.serve import start_server

        config = config_from_args(args, setup)
        try:
            url = start_server(config)
        except Exception as err:  # a replica that cannot start (out of memory, no GPU, ...)
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"the server did not start: {first_line} (the replicas' logs are in Ray's session folder, logs/serve/)") from None
        model = config.replica.served_name
        print(f"serving {model} (draft {setup.config.draft}, mode {args.mode}) at {url}/v1  (Ctrl-C or SIGTERM to stop)", file=sys.stderr)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        for signum in signals:
            signal.signal(signum, signal.SIG_IGN)
        if config is not None:
            from autojudge.pipeline.serve import stop_server

            stop_server(config.app_name)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
