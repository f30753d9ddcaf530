"""Preheat jobs and work-order queues in Redis.

A job is a hash (image, created, deadline) and a hash of its targets (node -> state, finished at,
message). A target moves on by one compare-and-set script, so two replicas reporting on two
targets of one job never overwrite each other; a job is finished when all its targets are, at the
latest of their times (the rules of `tracker.tasks.TaskBoard`).
"""

from __future__ import annotations

import json
from typing import Any

from tracker.errors import FailedPrecondition, TaskUnknown
from tracker.store.redisstore.base import Scripts, number, text, translating
from tracker.tasks import (
    MAX_JOBS,
    RETENTION_SECONDS,
    CheckOrder,
    Order,
    PreheatJob,
    PreheatOrder,
    RepublishOrder,
    Target,
    TaskState,
)

FINISHED = (TaskState.DONE, TaskState.FAILED)

# Move a target on from one of the states allowed; returns 1 if it moved.
TRANSITION = r"""
local key, node = k('jobt', ARGV[2]), ARGV[3]
local current = redis.call('HGET', key, node)
if not current then return 0 end
local state = string.match(current, '^(%d+)')
for i = 6, #ARGV do
  if ARGV[i] == state then
    redis.call('HSET', key, node, ARGV[4] .. '\t' .. ARGV[5])
    return 1
  end
end
return 0
"""

PUSH = r"""
local key = k('q', ARGV[2])
if redis.call('LLEN', key) >= tonumber(ARGV[3]) then return 0 end
redis.call('RPUSH', key, ARGV[4])
return 1
"""


def target_of(raw: bytes | str) -> tuple[Target, float]:
    state, finished_at, message = text(raw).split("\t", 2)
    return Target(TaskState(int(state)), message), number(finished_at)


def order_text(order: Order) -> str:
    if isinstance(order, PreheatOrder):
        return json.dumps({"preheat": [order.task_id, order.image]})
    kind = "check" if isinstance(order, CheckOrder) else "republish"
    fields = [order.task_id, order.digest, order.size, order.chunk_count, list(order.chunks)]
    return json.dumps({kind: fields})


def order_of(raw: bytes | str) -> Order:
    decoded = json.loads(raw)
    if "preheat" in decoded:
        return PreheatOrder(*decoded["preheat"])
    kind = CheckOrder if "check" in decoded else RepublishOrder
    task_id, digest, size, chunk_count, chunks = decoded.get("check") or decoded["republish"]
    return kind(task_id, digest, size, chunk_count, tuple(chunks))


@translating
class RedisTasks:
    def __init__(self, client: Any, scripts: Scripts, prefix: str) -> None:
        self._client = client
        self._p = prefix
        self._transition = scripts.register(TRANSITION)
        self._push = scripts.register(PUSH)

    async def next_id(self, prefix: str) -> str:
        return f"{prefix}-{await self._client.incr(self._p + 'seq')}"

    async def create(
        self, image: str, targets: list[str], now: float, timeout: float
    ) -> PreheatJob:
        if await self.count() >= MAX_JOBS:
            await self._forget_finished(now, keep=0.0)
        if await self.count() >= MAX_JOBS:
            raise FailedPrecondition(f"{MAX_JOBS} preheat jobs are running already")
        job = PreheatJob(await self.next_id("preheat"), image, now, now + timeout)
        job.targets = {node_id: Target() for node_id in targets}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(
                f"{self._p}job:{job.id}",
                mapping={"image": image, "created": repr(now), "deadline": repr(job.deadline)},
            )
            pending = f"{TaskState.PENDING.value}\t\t"
            pipe.hset(f"{self._p}jobt:{job.id}", mapping=dict.fromkeys(targets, pending))
            pipe.zadd(self._p + "jobs", {job.id: now})
            await pipe.execute()
        return job

    async def get(self, task_id: str) -> PreheatJob:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{self._p}job:{task_id}")
            pipe.hgetall(f"{self._p}jobt:{task_id}")
            fields, targets = await pipe.execute()
        if not fields:
            raise TaskUnknown(f"no preheat task {task_id!r}")
        fields = {text(key): value for key, value in fields.items()}
        job = PreheatJob(
            task_id, text(fields["image"]), number(fields["created"]), number(fields["deadline"])
        )
        times = []
        for node_id, raw in sorted(targets.items()):
            target, finished_at = target_of(raw)
            job.targets[text(node_id)] = target
            times.append(finished_at)
        if job.finished:
            job.finished_at = max(times, default=job.created_at)
        return job

    async def _ids(self) -> list[str]:
        return [text(i) for i in await self._client.zrange(self._p + "jobs", 0, -1)]

    async def _jobs(self) -> list[PreheatJob]:
        jobs = []
        for task_id in await self._ids():
            try:
                jobs.append(await self.get(task_id))
            except TaskUnknown:
                await self._client.zrem(self._p + "jobs", task_id)
        return jobs

    async def unfinished_for(self, node_id: str) -> list[PreheatJob]:
        ids = await self._ids()
        if not ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for task_id in ids:
                pipe.hget(f"{self._p}jobt:{task_id}", node_id)
            states = await pipe.execute()
        found = []
        for task_id, raw in zip(ids, states, strict=True):
            if raw is not None and target_of(raw)[0].state not in FINISHED:
                found.append(await self.get(task_id))
        return found

    async def _move(
        self,
        task_id: str,
        node_id: str,
        state: TaskState,
        now: float,
        message: str,
        allowed: tuple[TaskState, ...],
    ) -> None:
        value = f"{now!r}\t{message[:1024]}" if state in FINISHED else f"\t{message[:1024]}"
        await self._transition(task_id, node_id, state.value, value, *(s.value for s in allowed))

    async def delivered(self, node_id: str, task_id: str) -> None:
        await self._move(task_id, node_id, TaskState.DELIVERED, 0, "", (TaskState.PENDING,))

    async def pending(self, node_id: str, task_id: str) -> None:
        allowed = (TaskState.PENDING, TaskState.DELIVERED)
        await self._move(task_id, node_id, TaskState.PENDING, 0, "", allowed)

    async def report(self, node_id: str, task_id: str, ok: bool, message: str, now: float) -> None:
        job = await self.get(task_id)
        if node_id not in job.targets:
            raise TaskUnknown(f"node {node_id!r} is not a target of {task_id!r}")
        await self._finish(
            task_id, node_id, TaskState.DONE if ok else TaskState.FAILED, message, now
        )

    async def _finish(
        self, task_id: str, node_id: str, state: TaskState, message: str, now: float
    ) -> None:
        allowed = (TaskState.PENDING, TaskState.DELIVERED)
        await self._move(task_id, node_id, state, now, message, allowed)

    async def node_gone(self, node_id: str, reason: str, now: float) -> None:
        for job in await self.unfinished_for(node_id):
            await self._finish(job.id, node_id, TaskState.FAILED, reason, now)

    async def expire(self, now: float) -> None:
        for job in await self._jobs():
            if not job.finished and job.deadline <= now:
                for node_id, target in job.targets.items():
                    if not target.finished:
                        await self._finish(job.id, node_id, TaskState.FAILED, "timed out", now)
        await self._forget_finished(now, keep=RETENTION_SECONDS)

    async def _forget_finished(self, now: float, keep: float) -> None:
        for job in await self._jobs():
            if job.finished_at is not None and job.finished_at + keep <= now:
                await self._client.delete(f"{self._p}job:{job.id}", f"{self._p}jobt:{job.id}")
                await self._client.zrem(self._p + "jobs", job.id)

    async def count(self) -> int:
        return int(await self._client.zcard(self._p + "jobs"))

    async def push(self, node_id: str, order: Order, bound: int) -> bool:
        return bool(await self._push(node_id, bound, order_text(order)))

    async def pop(self, node_id: str) -> Order | None:
        raw = await self._client.lpop(self._p + "q:" + node_id)
        return None if raw is None else order_of(raw)

    async def clear(self, node_id: str) -> None:
        await self._client.delete(self._p + "q:" + node_id)
