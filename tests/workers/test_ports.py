"""Port conformance (as pgqueuer's test_port_conformance): QueueRepo, the adapter, offers
every method of workers.ports.Queue with the same parameters (names, kinds, defaults)."""

from __future__ import annotations

import inspect

import pytest

from orchestrator.queue.repo import QueueRepo
from workers.ports import Queue

METHODS = [name for name, value in vars(Queue).items()
           if callable(value) and not name.startswith("_")]


def _params(fn: object) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def test_the_port_names_the_worker_calls() -> None:
    assert set(METHODS) == {"claim", "start", "heartbeat", "record_metrics", "finish",
                            "requeue", "record_checkpoint", "register_worker", "worker_heartbeat",
                            "worker_stopped", "quarantine_worker", "worker_quarantine",
                            "snapshot"}


@pytest.mark.parametrize("name", METHODS)
def test_queue_repo_conforms_to_the_port(name: str) -> None:
    adapter = getattr(QueueRepo, name, None)
    assert adapter is not None, f"QueueRepo has no {name}()"
    assert _params(adapter) == _params(getattr(Queue, name)), name
