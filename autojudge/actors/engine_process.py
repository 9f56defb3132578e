"""A decode replica's engine core, in a process of its own.

Why a process: in the replica's own process, the event loop (taking requests, streaming each
row's tokens through Ray) and the thread running the engine share one GIL. A cycle is
hundreds of small torch operators; each releases the GIL while it computes and must take it
back, and while the event loop runs each take-back can wait up to the switch interval. At 16
rows on the toy pair a cycle took 1.7x its CPU time that way (6.4 s inside `step()` for 3.7 s
of the engine thread's CPU). Here the engine core has an interpreter to itself and runs its
cycles back to back; the replica sends it requests and aborts, and gets one message per cycle
with every row's new tokens (one pickle per cycle, not one Ray message per row).

Protocol: pickled tuples over a socket pair (`multiprocessing.connection.Connection` framing).

    replica -> engine   ("add", key, prompt_ids, settings) | ("abort", key) | ("fault", message) | ("delay", seconds)
    engine -> replica   ("ready", info) | ("error", message)            once, after loading
                        ("cycle", updates, step_s)    updates: [(key, token_ids, finished, stop_reason, metrics | None)]
                        ("rejected", key, message)    `add_request` refused the request (ValueError)
                        ("failed", keys, message)     a cycle raised: these requests failed; a fresh core took over

`key` is the replica's name for a request. Requests that arrive while the draft proposes join
that cycle's verification (`EngineCore.step(poll)`); aborts wait for the cycle's end. The child exits when its end of the socket closes,
which happens when the replica process ends in any way (SIGKILL included), and, while it loads
its models or runs a cycle, when a watchdog thread sees it has a new parent: it never outlives
its replica by more than a second or a cycle. ("fault", message) makes the next cycle raise `RuntimeError(message)`:
fault injection for tests of the failure path; ("delay", seconds) makes every cycle sleep that
long first (0: none), so that a test's request is certain to still run a while later.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable

from autojudge.setup import DecodingConfig


@dataclass(frozen=True)
class EngineConfig:
    """What the engine process loads and how its core schedules."""

    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """The pair, the judge (or None) and the default window (None: the judge's window, else the
    default) the engine is built with (`setup.DecodingConfig`; requests bring their own rule and budget)."""
    max_batch: int = 32
    """Rows decoded together."""
    device: str = "cpu"
    """torch device of both models."""
    threads: int = 1
    """torch CPU threads."""
    nice: int = 0
    """CPU priority of the engine process, added to its replica's nice value (negative: ahead of
    the replica, the ingress and the rest of the serving path; lowering needs root or
    CAP_SYS_NICE, and without it the process keeps its replica's priority); 0: unchanged."""


def set_priority(increment: int) -> tuple[int, str | None]:
    """Add `increment` to this process's nice value before any other thread starts (threads
    inherit it). Returns (the nice value now, why the change was refused or None)."""
    refused = None
    if increment:
        try:
            os.nice(increment)
        except OSError as err:
            refused = f"nice {increment:+d} refused ({err.strerror}): the engine process keeps its replica's priority"
    return os.getpriority(os.PRIO_PROCESS, 0), refused


def load_engine(config: EngineConfig) -> tuple[Callable[[], Any], dict[str, Any]]:
    """A maker of fresh engine cores over the config's loaded pair (and judge), and what the
    replica needs to know of it (context length, accepted token ids, judge defaults, window)."""
    import torch

    from autojudge.decode.engine.core import EngineCore
    from autojudge.judge import Judge
    from autojudge.models import load_pair, model_context

    torch.set_num_threads(max(1, config.threads))
    decoding = config.decoding
    pair = load_pair(decoding.target, decoding.draft, device=config.device)
    judge = None
    if decoding.judge:
        judge = Judge.load(decoding.judge)
        judge.check_model_pair(pair, decoding.same_pair)
    window = decoding.window_for(judge)

    def new_core() -> EngineCore:
        return EngineCore.for_pair(pair, judge=judge, default_window=window, max_batch=config.max_batch)

    models = (pair.target, pair.draft)
    info = {
        "context_length": min(model_context(m) for m in models),
        # token ids a prompt may hold: known to the tokenizer and to both embedding tables
        "vocab_size": min(len(pair.tokenizer), *(m.get_input_embeddings().weight.shape[0] for m in models)),
        "has_judge": judge is not None,
        "judge_threshold": judge.default_threshold if judge is not None else None,
        "default_window": window,
    }
    return new_core, info


def receive(conn: Connection, block: bool) -> list[tuple[Any, ...]]:
    """Every command waiting on `conn` (at least one when `block`); EOFError when the replica is gone."""
    commands = [conn.recv()] if block else []
    while conn.poll(0):
        commands.append(conn.recv())
    return commands


class EngineLoop:
    """The child's state: the core, the replica's keys of its requests, commands held for the next cycle."""

    def __init__(self, conn: Connection, new_core: Callable[[], Any]) -> None:
        self.conn, self.new_core = conn, new_core
        self.core = new_core()
        self.ids: dict[Any, int] = {}  # replica key -> core request id
        self.keys: dict[int, Any] = {}  # core request id -> replica key
        self.held: list[tuple[Any, ...]] = []  # aborts and faults that arrived inside a cycle
        self.fault: str | None = None
        self.delay = 0.0  # seconds each cycle sleeps first (tests)

    def apply(self, commands: list[tuple[Any, ...]], inside_cycle: bool = False) -> None:
        """Add requests now; abort and fault at a cycle boundary (a row cannot leave inside a cycle)."""
        for command in commands:
            if command[0] == "add":
                _, key, prompt_ids, settings = command
                try:
                    request_id = self.core.add_request(prompt_ids, settings)
                except ValueError as err:
                    self.conn.send(("rejected", key, str(err)))
                    continue
                self.ids[key], self.keys[request_id] = request_id, key
            elif inside_cycle:
                self.held.append(command)
            elif command[0] == "abort" and command[1] in self.ids:
                self.core.abort(self.ids[command[1]])
                del self.keys[self.ids.pop(command[1])]
            elif command[0] == "fault":
                self.fault = command[1]
            elif command[0] == "delay":
                self.delay = float(command[1])

    def poll(self) -> None:
        """Inside a cycle, after the draft proposed: requests that arrived join its verification."""
        try:
            commands = receive(self.conn, block=False)
        except (EOFError, OSError):
            return  # the replica is gone: the loop sees it at the cycle's end
        self.apply(commands, inside_cycle=True)

    def cycle(self) -> None:
        """One `core.step()`, reported as one message."""
        held, self.held = self.held, []
        self.apply(held)
        if not self.core.has_unfinished():
            return
        if self.delay:
            time.sleep(self.delay)
        started = time.perf_counter()
        try:
            if self.fault is not None:
                self.fault, message = None, self.fault
                raise RuntimeError(message)
            output = self.core.step(self.poll)
        except Exception as err:  # fail this cycle's requests, keep serving on a fresh core
            self.conn.send(("failed", list(self.ids), f"decode failed: {type(err).__name__}: {err}"))
            self.ids.clear()
            self.keys.clear()
            self.core = self.new_core()
            return
        updates = []
        for update in output.updates:
            key = self.keys.get(update.request_id)
            if key is None:
                continue
            if update.finished:
                del self.ids[self.keys.pop(update.request_id)]
            updates.append((key, update.new_token_ids, update.finished, update.stop_reason, update.metrics if update.finished else None))
        self.conn.send(("cycle", updates, time.perf_counter() - started))


def serve_engine(conn: Connection, config: EngineConfig) -> None:
    """The child's loop: apply commands, run a cycle while any request is unfinished, report it."""
    nice, refused = set_priority(config.nice)  # first: torch's threads inherit it
    try:
        new_core, info = load_engine(config)
        info.update(nice=nice, nice_refused=refused)
        loop = EngineLoop(conn, new_core)
    except Exception as err:  # a bad spec, judge or device: the replica raises it
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", info))
    while True:
        try:
            loop.apply(receive(conn, block=not (loop.core.has_unfinished() or loop.held)))
            loop.cycle()
        except (EOFError, OSError):
            return  # the replica is gone


class EngineProcess:
    """The replica's handle on its engine process: start, send commands, read messages, stop."""

    def __init__(self, config: EngineConfig, startup_timeout_s: float = 1800.0) -> None:
        """Start the child and wait until its models are loaded (RuntimeError with the child's
        error when loading fails, or when it exits or takes longer than `startup_timeout_s`)."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autojudge.actors.engine_process", str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send(config)
        self.info = self._wait_ready(startup_timeout_s)

    def _wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ready = self.conn.poll(0.5)
                message = self.conn.recv() if ready else None
            except (EOFError, OSError):
                message = None
            if message is not None:
                if message[0] == "ready":
                    return message[1]
                self.close()
                raise RuntimeError(f"the engine process could not start: {message[1]}")
            if self.process.poll() is not None:
                self.conn.close()
                raise RuntimeError(f"the engine process exited with code {self.process.returncode} while loading")
        self.close()
        raise RuntimeError(f"the engine process did not load its models within {timeout_s:.0f} s")

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, *command: Any) -> None:
        self.conn.send(command)

    def messages(self) -> list[tuple[Any, ...]]:
        """Every message waiting now (EOFError when the engine process is gone)."""
        return receive(self.conn, block=False)

    def close(self) -> None:
        """Stop the child (closing the socket ends its loop; terminate if it does not exit)."""
        try:
            self.conn.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def exit_with_parent(interval_s: float = 1.0) -> None:
    """A daemon thread ends this process once its parent (the replica) is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the replica; its end of the socket stops this
    exit_with_parent()
    conn = Connection(int(sys.argv[1]))
    serve_engine(conn, conn.recv())


if __name__ == "__main__":
    main()


__all__ = ["EngineConfig", "EngineLoop", "EngineProcess", "load_engine", "serve_engine"]
