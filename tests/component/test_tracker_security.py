"""Node identity on the tracker, tried as an attacker would: a forged node speaking the real
tracker protocol over gRPC, with no credential, a wrong one, or the valid credential of a node
it took over, attempts every act it may not do. Each is refused and the cluster is unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.certs import write_self_signed
from tests.support.stores import STORES, fresh_storage
from tracker import app as tracker_app
from tracker.app import Config, TrackerServer
from tracker.client import Directive, HeldBlob, NodeAddress, SeededRef, TrackerClient
from tracker.credentials import Role, issue
from tracker.errors import (
    MetainfoUnconfirmed,
    PermissionDenied,
    TrackerUnavailable,
    Unauthenticated,
)
from tracker.v1 import tracker_pb2 as pb

SECRET = b"the-cluster-secret-of-this-test"
D = "sha256:" + "d" * 64
SIZE, CHUNKS = 40 << 20, 4
REF = "docker.io/library/app:1"
EVIL = "sha256:" + "6" * 64
HONEST = "10.0.0.1:8080"
SEEDER = "10.0.0.3:8080"
TAKEN = "10.0.0.66:8080"  # a node an attacker took over: its own credential is valid


def address(node_id: str) -> NodeAddress:
    host = node_id.partition(":")[0]
    return NodeAddress(node_id, node_id, f"{host}:6881")


def credential(node_id: str, secret: bytes = SECRET) -> str:
    return issue(secret, Role.NODE, node_id)


OPERATOR = issue(SECRET, Role.OPERATOR, "ops")


@pytest.fixture(params=STORES)
async def tracker(request: pytest.FixtureRequest) -> AsyncIterator[TrackerServer]:
    storage = fresh_storage(request, request.param)
    config = Config(listen="127.0.0.1:0", http_listen=None, seeder=[SEEDER], storage=storage)
    async with TrackerServer(config, secret=SECRET) as server:
        yield server


@dataclass
class Cluster:
    """The honest side: a node holding chunk 0 and leasing chunk 1 of D, a seeder and its tag,
    and the operator's view of it all."""

    honest: TrackerClient
    seeder: TrackerClient
    operator: TrackerClient

    async def snapshot(self) -> object:
        status = await self.operator.status(include_blobs=True)
        nodes = sorted((n.id, n.registry, n.blobs, n.chunks, n.leases) for n in status.nodes)
        placement = await self.honest.locate(HONEST, D, SIZE, CHUNKS)
        chunks = [(c.directive, c.metainfo, c.lease_holder) for c in placement.chunks]
        resolved = [(r.digest, r.holders) for r in await self.honest.resolve(REF, HONEST)]
        return nodes, status.blobs, chunks, resolved


@pytest.fixture
async def cluster(tracker: TrackerServer) -> AsyncIterator[Cluster]:
    clients = [TrackerClient(tracker.address, credential=c) for c in
               (credential(HONEST), credential(SEEDER), OPERATOR)]  # fmt: skip
    honest, seeder, operator = clients
    await honest.join(address(HONEST), "i")
    await honest.announce(HONEST, [HeldBlob(D, SIZE, CHUNKS, (0,))])
    with pytest.raises(MetainfoUnconfirmed):  # not its lease: it waits for a second source
        await honest.publish(HONEST, D, SIZE, CHUNKS, 0, b"meta0")
    placement = await honest.locate(HONEST, D, SIZE, CHUNKS, chunks=[1], max_leases=1)
    assert placement.chunks[0].directive is Directive.FETCH
    await seeder.join(address(SEEDER), "i")
    await seeder.announce(SEEDER, [HeldBlob(D, SIZE, CHUNKS, (0,))], [SeededRef(REF, D)])
    await seeder.publish(SEEDER, D, SIZE, CHUNKS, 0, b"meta0")
    yield Cluster(honest, seeder, operator)
    for client in clients:
        await client.close()


Attack = Callable[[TrackerClient], Awaitable[object]]

# Every act a node may not do for another node, and those it may not do at all without a role.
ACTS_FOR_ANOTHER: dict[str, Attack] = {
    "join as another node": lambda c: c.join(NodeAddress(HONEST, "6.6.6.6:8080", "6.6.6.6:1"), "x"),
    "leave for another": lambda c: c.leave(HONEST),
    "heartbeat for another": lambda c: c.heartbeat(HONEST),
    "withdraw for another": lambda c: c.withdraw(HONEST, [D], corrupt=True),
    "announce for another": lambda c: c.announce(HONEST, [HeldBlob(D, SIZE, CHUNKS, (1, 2, 3))]),
    "announce a tag for a seeder": lambda c: c.announce(SEEDER, [], [SeededRef(REF, EVIL)]),
    "release another's lease": lambda c: c.release_lease(HONEST, D, 1),
    "renew another's lease": lambda c: c.renew_lease(HONEST, D, 1, 1 << 20, fetched=True),
    "publish for another": lambda c: c.publish(HONEST, D, SIZE, CHUNKS, 1, b"evil1"),
    "report another's task": lambda c: c.report_task(HONEST, "preheat-1", ok=False),
    "take another's tasks": lambda c: asyncio.wait_for(anext(c.tasks(HONEST)), 2),
    "watch as another": lambda c: c.watch(HONEST, D, SIZE, CHUNKS).__aenter__(),
}  # fmt: skip
ACTS_OF_ITS_OWN: dict[str, Attack] = {
    "publish metainfo for a chunk it holds no lease on": lambda c: c.publish(
        TAKEN, D, SIZE, CHUNKS, 1, b"evil1"
    ),
    "publish metainfo for a chunk nobody published": lambda c: c.publish(
        TAKEN, D, SIZE, CHUNKS, 2, b"evil2"
    ),
    "announce a seeded tag without the seeder role": lambda c: c.announce(
        TAKEN, [], [SeededRef(REF, EVIL)]
    ),
    "ask for the cluster's status": lambda c: c.status(),
    "preheat": lambda c: c.preheat(REF),
}
EVERY_ACT = ACTS_FOR_ANOTHER | ACTS_OF_ITS_OWN


@pytest.mark.parametrize("act", list(EVERY_ACT))
async def test_a_node_that_was_taken_over_can_act_only_for_itself(
    tracker: TrackerServer, cluster: Cluster, act: str
) -> None:
    forged = TrackerClient(tracker.address, credential=credential(TAKEN))
    try:
        await forged.join(address(TAKEN), "x")  # its own: allowed
        before = await cluster.snapshot()
        expected = MetainfoUnconfirmed if act.startswith("publish metainfo") else PermissionDenied
        with pytest.raises(expected):
            await EVERY_ACT[act](forged)
        assert await cluster.snapshot() == before
    finally:
        await forged.close()


@pytest.mark.parametrize(
    "presented",
    [None, "", "garbage", credential(HONEST, b"another-cluster-secret-0123"),
     credential(HONEST)[:-4] + "AAAA", "Basic " + credential(HONEST)],
)  # fmt: skip
async def test_a_node_without_a_valid_credential_can_do_nothing(
    tracker: TrackerServer, cluster: Cluster, presented: str | None
) -> None:
    forged = TrackerClient(tracker.address, credential=presented)
    if presented and presented.startswith("Basic "):
        forged._metadata = (("authorization", presented),)
    try:
        before = await cluster.snapshot()
        for name, act in EVERY_ACT.items():
            with pytest.raises(Unauthenticated):
                await act(forged)
                pytest.fail(f"{name}: not refused")
        assert await cluster.snapshot() == before
    finally:
        await forged.close()


async def test_metainfo_without_the_lease_is_taken_once_a_second_node_publishes_it(
    tracker: TrackerServer, cluster: Cluster
) -> None:
    others = [
        TrackerClient(tracker.address, credential=credential(n)) for n in (TAKEN, "10.0.0.4:8080")
    ]
    try:
        for client, node_id in zip(others, (TAKEN, "10.0.0.4:8080"), strict=True):
            await client.join(address(node_id), "x")
        with pytest.raises(MetainfoUnconfirmed):
            await others[0].publish(TAKEN, D, SIZE, CHUNKS, 3, b"meta3")
        with pytest.raises(MetainfoUnconfirmed):  # the same node again is no second source
            await others[0].publish(TAKEN, D, SIZE, CHUNKS, 3, b"meta3")
        await others[1].publish("10.0.0.4:8080", D, SIZE, CHUNKS, 3, b"meta3")
        placement = await cluster.honest.locate(HONEST, D, SIZE, CHUNKS, chunks=[0, 3])
        assert [c.metainfo for c in placement.chunks] == [b"meta0", b"meta3"]
    finally:
        for client in others:
            await client.close()


async def test_the_lease_holder_and_a_seeder_publish_alone(cluster: Cluster) -> None:
    await cluster.honest.publish(HONEST, D, SIZE, CHUNKS, 1, b"meta1")  # it holds the lease
    await cluster.seeder.publish(SEEDER, D, SIZE, CHUNKS, 2, b"meta2")  # the operator trusts it
    placement = await cluster.honest.locate(HONEST, D, SIZE, CHUNKS, chunks=[0, 1, 2])
    assert [c.metainfo for c in placement.chunks] == [b"meta0", b"meta1", b"meta2"]
    (resolution,) = await cluster.honest.resolve(REF, HONEST)
    assert (resolution.digest, resolution.holders) == (D, 1)


async def test_an_open_tracker_still_keeps_tags_to_seeders() -> None:
    config = Config(listen="127.0.0.1:0", http_listen=None, seeder=[SEEDER])
    async with TrackerServer(config) as server:
        client = TrackerClient(server.address)
        try:
            await client.join(address(TAKEN), "x")
            with pytest.raises(PermissionDenied):
                await client.announce(TAKEN, [], [SeededRef(REF, D)])
            assert await client.resolve(REF, TAKEN) == []
        finally:
            await client.close()


async def test_health_checks_need_no_credential(tracker: TrackerServer) -> None:
    async with grpc.aio.insecure_channel(tracker.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_raw_protocol_is_held_to_the_same_rules(tracker: TrackerServer) -> None:
    """No client-side check hides a gap: a hand-made Leave for another node is refused too."""
    from tracker.v1 import tracker_pb2_grpc

    async with grpc.aio.insecure_channel(tracker.address) as channel:
        stub = tracker_pb2_grpc.TrackerStub(channel)  # type: ignore[no-untyped-call]
        metadata = (("authorization", f"Bearer {credential(TAKEN)}"),)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Leave(pb.LeaveRequest(node_id=HONEST), metadata=metadata)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_tls_with_a_trusted_certificate(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    config = Config(listen="127.0.0.1:0", http_listen=None, tls_cert=cert, tls_key=key)
    async with TrackerServer(config, secret=SECRET) as server:
        node = TrackerClient(server.address, credential=credential(HONEST), tls_ca=cert)
        operator = TrackerClient(server.address, credential=OPERATOR, tls_ca=cert)
        plain = TrackerClient(server.address, credential=OPERATOR, timeout=2)
        try:
            await node.join(address(HONEST), "i")
            assert [n.id for n in (await operator.status()).nodes] == [HONEST]
            with pytest.raises(TrackerUnavailable):
                await plain.status()
        finally:
            for client in (node, operator, plain):
                await client.close()


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


async def test_a_connection_that_makes_no_call_is_closed_once_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client may finish gRPC's handshake (the HTTP/2 preface) and then hold the connection
    without a call: each held one of the tracker's files and some memory, for ever. It is closed
    once idle for IDLE_SECONDS; a node's channel, whose connection is closed the same way
    between calls, connects again at its next call."""
    monkeypatch.setattr(tracker_app, "IDLE_SECONDS", 1.0)
    async with TrackerServer(Config(listen="127.0.0.1:0", http_listen=None)) as tracker:
        client = TrackerClient(tracker.address)
        held = [await _hold_connection(tracker.port) for _ in range(3)]
        try:
            await client.join(address(HONEST), "i")
            assert [await _closed_within(reader, 10.0) for reader, _ in held] == [True] * 3
            await client.heartbeat(HONEST)
        finally:
            await client.close()
            for _, writer in held:
                writer.close()


async def test_connections_beyond_the_bound_are_closed_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Beyond MAX_CONNECTIONS (here 4: a node's and three held without a call), a new connection
    is closed as soon as it is accepted; those open stay open."""
    monkeypatch.setattr(tracker_app, "MAX_CONNECTIONS", 4)
    async with TrackerServer(Config(listen="127.0.0.1:0", http_listen=None)) as tracker:
        client = TrackerClient(tracker.address)
        held = []
        try:
            await client.join(address(HONEST), "i")
            held = [await _hold_connection(tracker.port) for _ in range(4)]
            assert await _closed_within(held[3][0], 5.0)
            assert [await _closed_within(reader, 0.2) for reader, _ in held[:3]] == [False] * 3
            await client.heartbeat(HONEST)
        finally:
            await client.close()
            for _, writer in held:
                writer.close()


async def _hold_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HTTP2_PREFACE)
    await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (frames it sends are read)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            if not await asyncio.wait_for(reader.read(65536), left):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False
