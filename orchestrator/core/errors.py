"""The one error tree of recip.

    RecipError                      every error the CLI turns into one line and exit 1
    ├── SpecError                   a study spec is invalid (file, YAML path, fix)
    ├── UnknownMechanism            a mechanism name that is not in the registry
    ├── UnknownStudy / UnknownStep  a name given on the command line does not exist
    ├── QueueError                  anything the queue refuses
    │   ├── StaleTransition         a guarded state change found the row in another state
    │   ├── LeaseLost               a fenced write found the attempt no longer ours
    │   ├── SchemaOutOfDate         the database revision is not the code's head
    │   └── DatabaseUnavailable     the database cannot be reached or opened
    ├── WorkerError                 a worker cannot start (GPUs, Ray, environment)
    ├── DataError                   a dataset or tokenizer is missing or corrupt
    ├── TrackerError                W&B cannot be reached, or a W&B run cannot be read
    └── CheckpointError             a checkpoint cannot be read

Each class's docstring is its default message (procrastinate's convention). Messages name
the thing and the fix.
"""

from __future__ import annotations


class RecipError(Exception):
    """recip failed."""

    def __init__(self, message: str | None = None) -> None:
        if not message:
            message = (self.__doc__ or "").strip()
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class SpecError(RecipError):
    """The study spec is invalid."""

    def __init__(self, message: str | None = None, *, file: str | None = None,
                 path: str | None = None) -> None:
        self.file = file
        self.path = path
        text = message or (self.__doc__ or "").strip()
        prefix = ": ".join(p for p in (file, path) if p)
        super().__init__(f"{prefix}: {text}" if prefix else text)


class UnknownMechanism(RecipError):
    """Unknown mechanism name."""


class UnknownStudy(RecipError):
    """No study of that name in this database; `recip queue ls` lists the studies."""


class UnknownStep(RecipError):
    """No step of that name in this study; `recip status STUDY` lists its steps."""


class QueueError(RecipError):
    """The queue refused the operation."""


class StaleTransition(QueueError):
    """The attempt is no longer in the state this change expects."""


class LeaseLost(QueueError):
    """This worker no longer holds the lease on the attempt; it must stop it."""


class SchemaOutOfDate(QueueError):
    """The database schema does not match this version of recip: run `recip db upgrade`."""


class DatabaseUnavailable(QueueError):
    """The database cannot be reached; check --db / RECIP_DB_URL."""


class WorkerError(RecipError):
    """The workers cannot start."""


class DataError(RecipError):
    """The dataset is missing or corrupt; run `recip data prepare`."""


class TrackerError(RecipError):
    """W&B failed; check the network and WANDB_API_KEY, or keep the runs offline."""


class CheckpointError(RecipError):
    """The checkpoint cannot be read; delete it to restart the attempt from scratch."""
