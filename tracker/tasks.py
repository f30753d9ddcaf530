"""Work the tracker hands to nodes over their Tasks stream, and the preheat jobs it tracks.

A preheat job has one target per chosen node; each target goes PENDING -> DELIVERED (taken from
the stream) -> DONE or FAILED (reported by the node, or the node left, or the job timed out).
Finished jobs are kept for a while so that `preheat --wait` and `status` can read them.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from tracker.errors import FailedPrecondition, TaskUnknown

MAX_JOBS = 1000
RETENTION_SECONDS = 3600.0


class TaskState(enum.Enum):
    PENDING = 1
    DELIVERED = 2
    DONE = 3
    FAILED = 4


@dataclass
class Target:
    state: TaskState = TaskState.PENDING
    message: str = ""

    @property
    def finished(self) -> bool:
        return self.state in (TaskState.DONE, TaskState.FAILED)


@dataclass
class PreheatJob:
    id: str
    image: str
    created_at: float
    deadline: float
    targets: dict[str, Target] = field(default_factory=dict)
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return all(t.finished for t in self.targets.values())


@dataclass(frozen=True)
class PreheatOrder:
    task_id: str
    image: str


@dataclass(frozen=True)
class ChunksOrder:
    task_id: str
    digest: str
    size: int
    chunk_count: int
    chunks: tuple[int, ...]


@dataclass(frozen=True)
class RepublishOrder(ChunksOrder):
    """The tracker knows holders of these chunks but not their metainfo: publish it."""


@dataclass(frozen=True)
class CheckOrder(ChunksOrder):
    """A peer's piece checks failed on these chunks: hash the node's copies, withdraw any that is
    damaged."""


Order = PreheatOrder | RepublishOrder | CheckOrder


class TaskBoard:
    def __init__(self) -> None:
        self._jobs: dict[str, PreheatJob] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._jobs)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def create(self, image: str, targets: list[str], now: float, timeout: float) -> PreheatJob:
        if len(self._jobs) >= MAX_JOBS:
            self._forget_finished(now, keep=0.0)
        if len(self._jobs) >= MAX_JOBS:
            raise FailedPrecondition(f"{MAX_JOBS} preheat jobs are running already")
        job = PreheatJob(self.next_id("preheat"), image, now, now + timeout)
        job.targets = {node_id: Target() for node_id in targets}
        self._jobs[job.id] = job
        return job

    def get(self, task_id: str) -> PreheatJob:
        job = self._jobs.get(task_id)
        if job is None:
            raise TaskUnknown(f"no preheat task {task_id!r}")
        return job

    def unfinished_for(self, node_id: str) -> list[PreheatJob]:
        return [
            job
            for job in self._jobs.values()
            if node_id in job.targets and not job.targets[node_id].finished
        ]

    def delivered(self, node_id: str, task_id: str) -> None:
        target = self._jobs[task_id].targets.get(node_id) if task_id in self._jobs else None
        if target is not None and target.state is TaskState.PENDING:
            target.state = TaskState.DELIVERED

    def report(self, node_id: str, task_id: str, ok: bool, message: str, now: float) -> None:
        job = self.get(task_id)
        if node_id not in job.targets:
            raise TaskUnknown(f"node {node_id!r} is not a target of {task_id!r}")
        self._finish(job, node_id, TaskState.DONE if ok else TaskState.FAILED, message, now)

    def node_gone(self, node_id: str, reason: str, now: float) -> None:
        for job in self.unfinished_for(node_id):
            self._finish(job, node_id, TaskState.FAILED, reason, now)

    def expire(self, now: float) -> None:
        for job in list(self._jobs.values()):
            if not job.finished and job.deadline <= now:
                for node_id, target in job.targets.items():
                    if not target.finished:
                        self._finish(job, node_id, TaskState.FAILED, "timed out", now)
        self._forget_finished(now, keep=RETENTION_SECONDS)

    def _finish(
        self, job: PreheatJob, node_id: str, state: TaskState, message: str, now: float
    ) -> None:
        target = job.targets[node_id]
        if target.finished:
            return
        target.state, target.message = state, message[:1024]
        if job.finished:
            job.finished_at = now

    def _forget_finished(self, now: float, keep: float) -> None:
        for job_id, job in list(self._jobs.items()):
            if job.finished_at is not None and job.finished_at + keep <= now:
                del self._jobs[job_id]
