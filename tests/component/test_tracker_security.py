"""The shared token on every tracker RPC, and TLS."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tracker.app import Config, TrackerServer
from tracker.client import NodeAddress, TrackerClient
from tracker.errors import TrackerUnavailable, Unauthenticated

TOKEN = "s3cret-token"
NODE = NodeAddress("n1", "127.0.0.1:8001", "127.0.0.1:7001")
D = "sha256:" + "d" * 64


@pytest.fixture
async def guarded() -> AsyncIterator[TrackerServer]:
    async with TrackerServer(Config(listen="127.0.0.1:0", http_listen=None, token=TOKEN)) as s:
        yield s


async def test_calls_without_the_token_are_refused(guarded: TrackerServer) -> None:
    for token in (None, "wrong"):
        client = TrackerClient(guarded.address, token=token)
        try:
            with pytest.raises(Unauthenticated):
                await client.join(NODE, "i")
            with pytest.raises(Unauthenticated):
                await client.status()
            with pytest.raises(Unauthenticated):
                async with client.watch("n1", D, 100, 1):
                    pass
            with pytest.raises(Unauthenticated):
                await anext(client.tasks("n1"))
        finally:
            await client.close()
    assert await guarded.cluster.store.members.count() == 0


async def test_calls_with_the_token_pass(guarded: TrackerServer) -> None:
    client = TrackerClient(guarded.address, token=TOKEN)
    try:
        await client.join(NODE, "i")
        async with client.watch("n1", D, 100, 1):
            pass
        assert [n.id for n in (await client.status()).nodes] == ["n1"]
    finally:
        await client.close()


async def test_health_checks_need_no_token(guarded: TrackerServer) -> None:
    async with grpc.aio.insecure_channel(guarded.address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tracker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tracker.pem", directory / "tracker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_with_a_trusted_certificate(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    config = Config(listen="127.0.0.1:0", http_listen=None, token=TOKEN, tls_cert=cert, tls_key=key)
    async with TrackerServer(config) as server:
        trusted = TrackerClient(server.address, token=TOKEN, tls_ca=cert)
        plain = TrackerClient(server.address, token=TOKEN, timeout=2)
        try:
            await trusted.join(NODE, "i")
            assert [n.id for n in (await trusted.status()).nodes] == ["n1"]
            with pytest.raises(TrackerUnavailable):
                await plain.status()
        finally:
            await trusted.close()
            await plain.close()
