"""Shared pieces of the end-to-end tests: a tiny study on a small text corpus, process
bookkeeping (every descendant of this test process, to prove none is left behind)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CORPUS = ("In the beginning was the word, and the word was with the worker. " * 6 + "\n") * 120


def write_spec(tmp_path: Path, *, study: str = "e2e", steps: tuple[str, ...] = ("V0", "V1", "V2"),
               iters: int | None = 12, seconds: float | None = None,
               checkpoint_every: int | None = None, seeds: tuple[int, ...] = (1,)) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    budget = f"{{iters: {iters}}}" if iters else f"{{seconds: {seconds}}}"
    ckpt = f"\n    checkpoint_every: {checkpoint_every}" if checkpoint_every else ""
    lines = [
        f"study: {study}",
        "description: end-to-end test study",
        "defaults:",
        "  model: {n_layer: 1, n_head: 2, n_embd: 32, block_size: 32}",
        f"  data: {{dataset: 'text:{corpus}', tokenizer: byte}}",
        "  train:",
        f"    budget: {budget}",
        "    batch_size: 4",
        "    warmup: 2",
        "    eval_every: 6",
        "    eval_batches: 2",
        f"    log_every: 2{ckpt}",
        "  optimizer: {name: adamw}",
        "  wandb: {mode: disabled}",
        f"  seeds: [{', '.join(map(str, seeds))}]",
        "steps:",
    ]
    bodies = {
        "V0": "{description: baseline}",
        "V1": "{parent: V0, mlp: {rmlp: {R_ff: 16}}}",
        "V2": "{parent: V0, train: {lr: 1.0e-3}}",
    }
    lines += [f"  {s}: {bodies.get(s, '{parent: V0}')}" for s in steps]
    path = tmp_path / f"{study}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry))
    return out


def descendants(pid: int | None = None) -> set[int]:
    root = os.getpid() if pid is None else pid
    tree = _children()
    seen: set[int] = set()
    todo = [root]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class ProcessWatcher:
    """Samples this process's descendants in the background (Ray's and the trainers').
    Processes that were already there when it started (e.g. multiprocessing's resource
    tracker, left by an earlier test in the same session) are not this test's."""

    def __init__(self, every: float = 0.3) -> None:
        self.before: set[int] = set()
        self.seen: set[int] = set()
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen |= descendants() - self.before
            self._stop.wait(self.every)

    def __enter__(self) -> ProcessWatcher:
        self.before = descendants()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def leftovers(self, timeout: float = 15.0) -> set[int]:
        deadline = time.monotonic() + timeout
        while True:
            left = {p for p in self.seen if alive(p)}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)
