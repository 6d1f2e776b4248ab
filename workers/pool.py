"""A pool of worker actors: one per GPU, or N CPU workers; `ray.wait` on their `run()`.

On a cluster (`address`) each box runs its own pool: the actors are pinned to the driver's
own Ray node (NodeAffinitySchedulingStrategy, hard), only that node's GPUs and CPUs are
planned, and the actors get the box's own cwd, runs dir and data dir. So boxes join and
leave independently: a box's death takes only its own attempts, which the queue reaps as
`lost` and another box resumes (docs/cluster.md).

Local Ray is started in-process and kept quiet and small: no dashboard, token auth off,
usage stats off, an 80 MB object store, worker logs not forwarded to the driver's stdout,
and its session files in a fresh directory under the system temp dir that `shutdown()`
removes. A dead actor is replaced (at most `max_restarts` times per slot); its attempt is
reaped as `lost` by the queue once its lease expires and resumed by whoever claims it next.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.core.errors import WorkerError
from workers.loop import WorkerReport, WorkerSettings
from workers.provenance import gpu_indices
from workers.train import artifacts

logger = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 80 * 1024 * 1024
QUIET_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    # Ray's C++ failure handler would turn the SIGTERM of `recip workers down` into a crash
    # of the driver; without it the CLI's handler stops the workers cleanly.
    "RAY_DISABLE_FAILURE_SIGNAL_HANDLER": "1",
}


@dataclass(frozen=True)
class PoolConfig:
    db_url: str
    runs_dir: Path
    gpus: str | None = None
    """`all`, a list like `0,1`, or None (all GPUs if there are any, else CPU workers)."""
    cpu_workers: int | None = None
    address: str | None = None
    """None: start a local Ray in this process; `auto` or `ray://host:port`: join a cluster."""
    lease_s: float = 30.0
    poll_s: float = 0.5
    idle_poll_s: float = 2.0
    grace_s: float = 120.0
    kill_after_s: float = 30.0
    until_empty: bool = False
    study: str | None = None
    max_attempts: int | None = None
    runner_command: tuple[str, ...] | None = None
    max_restarts: int = 3
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the workers and their attempts (e.g. RECIP_DATA_DIR)."""
    db_label: str = ""
    node_id: str | None = None
    """On a cluster: the Ray node the actors are pinned to (hex id); None = the driver's."""
    storage: str | None = None
    """Where attempts persist checkpoints and final artifacts (workers/storage.py)."""


@dataclass(frozen=True)
class Slot:
    name: str
    gpu: bool
    num_cpus: float

    @property
    def threads(self) -> int | None:
        """Torch threads for this slot's attempts: its cores on a CPU slot, else torch's own."""
        return None if self.gpu else max(1, int(self.num_cpus))


def slot_env(slot: Slot, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a slot's actor and attempts: `extra`, plus, on a CPU slot with k
    cores, RECIP_THREADS=k, OMP_NUM_THREADS=k and OMP_WAIT_POLICY=PASSIVE (each unless
    `extra` or this process's own environment sets it): k workers share the machine instead
    of each starting a thread per core, and an OpenMP thread waiting for a busy core sleeps
    instead of spinning (spinning made a tiny eval 20-40x slower on a loaded 2-core box,
    docs/performance.md)."""
    env = dict(extra)
    if slot.threads is not None:
        wanted = {artifacts.THREADS_ENV: str(slot.threads), "OMP_NUM_THREADS": str(slot.threads),
                  "OMP_WAIT_POLICY": "PASSIVE"}
        for key, value in wanted.items():
            if key not in env and key not in os.environ:
                env[key] = value
    return env


@dataclass
class _Member:
    slot: Slot
    actor: Any
    ref: Any
    restarts: int = 0
    pid: int | None = None
    worker_id: str | None = None


def _parse_gpus(gpus: str) -> list[int] | None:
    if gpus.strip().lower() == "all":
        return None
    try:
        out = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise WorkerError(f"--gpus {gpus!r}: expected `all` or a list of GPU indices like 0,1"
                          ) from None
    if not out or len(set(out)) != len(out) or min(out) < 0:
        raise WorkerError(f"--gpus {gpus!r}: expected `all` or distinct GPU indices like 0,1")
    return out


class WorkerPool:
    """Start workers, wait for them, stop them cleanly; use as a context manager."""

    def __init__(self, config: PoolConfig) -> None:
        self.config = config
        self.members: list[_Member] = []
        self.reports: list[WorkerReport] = []
        self.deaths: list[str] = []
        self._temp_dir: str | None = None
        self._local = config.address is None
        self._stopping = False
        self._restore_env: dict[str, str | None] = {}
        self.node_id: str | None = None
        """The Ray node this pool's actors run on (set by `start()` on a cluster)."""

    # --- start -------------------------------------------------------------------------

    def _plan_local(self) -> tuple[list[Slot], dict[str, Any]]:
        c = self.config
        cores = os.cpu_count() or 1
        local_gpus = gpu_indices()
        wanted: list[int] = []
        if c.gpus is not None:
            picked = _parse_gpus(c.gpus)
            if picked is None:
                if not local_gpus:
                    why = ("nvidia-smi lists none" if shutil.which("nvidia-smi") else
                           "there is no nvidia-smi, so no NVIDIA driver")
                    raise WorkerError(f"--gpus all: this machine has no GPU ({why}); "
                                      "use --cpu-workers N")
                wanted = local_gpus
            else:
                missing = [g for g in picked if g not in local_gpus]
                if missing:
                    fix = (f"(GPUs: {','.join(map(str, local_gpus))}); pick from those or use "
                           "--gpus all" if local_gpus else "; use --cpu-workers N")
                    raise WorkerError(
                        f"--gpus {c.gpus}: asked for {len(picked)} GPU(s) but this machine has "
                        f"{len(local_gpus)} {fix}".replace(" ;", ";"))
                wanted = picked
        elif not c.cpu_workers and local_gpus:
            wanted = local_gpus
        slots = [Slot(f"gpu{g}", True, 1.0) for g in wanted]
        n_cpu = c.cpu_workers if c.cpu_workers else (0 if slots else 1)
        if n_cpu < 0:
            raise WorkerError(f"--cpu-workers {n_cpu}: expected 0 or more")
        per = float(max(1, (cores - len(slots)) // n_cpu)) if n_cpu else 1.0
        slots += [Slot(f"cpu{i}", False, per) for i in range(n_cpu)]
        if not slots:
            raise WorkerError("no workers to start: use --gpus all|0,1 or --cpu-workers N")
        num_cpus = max(cores, int(sum(s.num_cpus for s in slots)))
        init: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": len(wanted)}
        if wanted:
            self._restore_env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, wanted))
        return slots, init

    def _node_resources(self, ray: Any) -> tuple[dict[str, float], dict[str, float]]:
        """(total, free) resources of this pool's own Ray node."""
        from ray._private import state

        node = self.node_id
        alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        if node not in alive:
            raise WorkerError(f"Ray node {node} is not a live node of the cluster at "
                              f"{self.config.address} (live: {', '.join(sorted(alive)) or 'none'})")
        total = dict(alive[node].get("Resources", {}))
        try:
            free = dict(state.available_resources_per_node().get(node, {}))  # type: ignore[no-untyped-call]
        except Exception:  # noqa: BLE001 - a private API; the node's total is a fair bound
            free = dict(total)
        return total, free

    def _plan_cluster(self, ray: Any) -> list[Slot]:
        """Slots on this box's own node only: boxes plan their GPUs independently."""
        c = self.config
        total, free = self._node_resources(ray)
        n_gpu_node = int(total.get("GPU", 0))
        n_gpu_free = int(free.get("GPU", 0))
        where = f"this box's Ray node ({self.node_id})"
        slots: list[Slot] = []
        if c.gpus is not None:
            picked = _parse_gpus(c.gpus)
            n = n_gpu_free if picked is None else len(picked)
            if picked is None and n == 0:
                raise WorkerError(f"--gpus all: {where} has no free GPU ({n_gpu_node} in all); "
                                  "use --cpu-workers N")
            if n > n_gpu_free:
                raise WorkerError(
                    f"--gpus {c.gpus}: asked for {n} GPU(s) but {where} has {n_gpu_free} "
                    f"free ({n_gpu_node} in all); ask for fewer")
            slots = [Slot(f"gpu{i}", True, 1.0) for i in range(n)]
        elif not c.cpu_workers and n_gpu_free:
            slots = [Slot(f"gpu{i}", True, 1.0) for i in range(n_gpu_free)]
        n_cpu = c.cpu_workers if c.cpu_workers else (0 if slots else 1)
        free_cpu = float(free.get("CPU", 0.0)) - len(slots)
        if n_cpu and free_cpu < n_cpu:
            raise WorkerError(f"--cpu-workers {n_cpu}: {where} has {max(0.0, free_cpu):.0f} "
                              "free CPUs; ask for fewer")
        slots += [Slot(f"cpu{i}", False, 1.0) for i in range(n_cpu)]
        return slots

    def start(self) -> list[Slot]:
        """Start (or join) Ray and one actor per slot; raise WorkerError when it cannot."""
        import ray as ray_module

        ray: Any = ray_module

        c = self.config
        for k, v in QUIET_ENV.items():
            if self._local or k != "RAY_AUTH_MODE":
                self._restore_env.setdefault(k, os.environ.get(k))
                os.environ.setdefault(k, v)
        try:
            if self._local:
                slots, init = self._plan_local()
                self._temp_dir = tempfile.mkdtemp(prefix="recip-ray-")
                ray.init(include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                         _temp_dir=self._temp_dir, logging_level=logging.WARNING,
                         log_to_driver=False, configure_logging=True, **init)
                if slots[0].gpu and int(ray.cluster_resources().get("GPU", 0)) < sum(
                        s.gpu for s in slots):
                    raise WorkerError(f"Ray sees {ray.cluster_resources().get('GPU', 0)} GPUs, "
                                      f"fewer than the {sum(s.gpu for s in slots)} asked for")
            else:
                try:
                    ray.init(address=c.address, logging_level=logging.WARNING,
                             log_to_driver=False, configure_logging=True)
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise WorkerError(f"--address {c.address}: cannot join the Ray cluster: "
                                      f"{e}") from e
                self.node_id = c.node_id or ray.get_runtime_context().get_node_id()
                slots = self._plan_cluster(ray)
        except BaseException:
            self.shutdown()
            raise
        for slot in slots:
            self.members.append(self._spawn(slot))
        return slots

    def _spawn(self, slot: Slot, restarts: int = 0) -> _Member:
        from workers.actor import ActorSpec, CpuWorker, GpuWorker

        c = self.config
        settings = WorkerSettings(
            worker_id=slot.name, runs_dir=c.runs_dir.resolve(), lease_s=c.lease_s,
            poll_s=c.poll_s, idle_poll_s=c.idle_poll_s, grace_s=c.grace_s,
            kill_after_s=c.kill_after_s, max_attempts=c.max_attempts,
            until_empty=c.until_empty, study=c.study, db_label=c.db_label,
            storage=c.storage)
        spec = ActorSpec(db_url=c.db_url, settings=settings, slot=slot.name, cwd=os.getcwd(),
                         runner_command=c.runner_command,
                         env=tuple(sorted(slot_env(slot, c.env).items())),
                         node_tag=f"@{self.node_id[:8]}" if c.node_id and self.node_id else "")
        cls = GpuWorker if slot.gpu else CpuWorker
        opts: dict[str, Any] = {}
        if not slot.gpu:
            opts["num_cpus"] = slot.num_cpus
        if self.node_id is not None:  # this box's node, never another's (hard affinity)
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                self.node_id, soft=False, _fail_on_unavailable=True)
        actor: Any = cls.options(**opts).remote(spec)
        return _Member(slot=slot, actor=actor, ref=actor.run.remote(), restarts=restarts)

    # --- run -----------------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self.members)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` for a worker to end; True once every worker has ended."""
        import ray
        from ray.exceptions import RayActorError

        if not self.members:
            return True
        ready, _ = ray.wait([m.ref for m in self.members], num_returns=1, timeout=timeout)
        for ref in ready:
            member = next(m for m in self.members if m.ref == ref)
            self.members.remove(member)
            try:
                self.reports.append(ray.get(ref))
            except RayActorError as e:
                self.deaths.append(member.slot.name)
                logger.warning("worker %s died: %s", member.slot.name, str(e).splitlines()[0])
                if not self._stopping and member.restarts < self.config.max_restarts:
                    self.members.append(self._spawn(member.slot, member.restarts + 1))
        return not self.members

    def actor_pids(self) -> dict[str, int]:
        """slot -> pid of its actor process (asks each actor)."""
        import ray

        infos = ray.get([m.actor.info.remote() for m in self.members], timeout=60)
        return {m.slot.name: int(i["pid"]) for m, i in zip(self.members, infos, strict=True)}

    def stop(self) -> None:
        """Ask every worker to stop: running attempts checkpoint and go back to queued."""
        self._stopping = True
        for m in self.members:
            try:
                m.actor.stop.remote()
            except Exception as e:  # noqa: BLE001 - a dead actor has nothing to stop
                logger.debug("stop %s: %s", m.slot.name, e)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every worker to end; True when they all did."""
        deadline = time.monotonic() + timeout
        while self.members:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.wait(min(left, 1.0))
        return True

    def shutdown(self, grace: float | None = None) -> None:
        """Stop the workers (waiting up to `grace`), kill what is left, stop Ray, clean up."""
        import ray

        if ray.is_initialized():
            if self.members:
                self.stop()
                self.join(self.config.kill_after_s + 10.0 if grace is None else grace)
            for m in self.members:
                try:
                    ray.kill(m.actor)
                except Exception as e:  # noqa: BLE001
                    logger.debug("kill %s: %s", m.slot.name, e)
            self.members.clear()
            ray.shutdown()
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
        for k, v in self._restore_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._restore_env.clear()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
