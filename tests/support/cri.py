"""The kubelet's side of an image pull: the CRI `ImageService/PullImage` call, over containerd's
gRPC socket, with the auth a pod's image pull secret becomes.

The kubelet builds `AuthConfig` from the secret's entry for the image's registry with a user and
a password and no `server_address` (its keyring keeps only those); `server_address` is there to
show what containerd does when one is set. The two messages are small enough to encode by hand
(protobuf: every field here is a length-delimited string or message), so no generated code is
needed for k8s.io/cri-api's runtime.v1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

PULL_IMAGE = "/runtime.v1.ImageService/PullImage"


@dataclass(frozen=True)
class AuthConfig:
    username: str
    password: str
    server_address: str = ""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def pull_request(image: str, auth: AuthConfig | None) -> bytes:
    """PullImageRequest{image: ImageSpec{image}, auth: AuthConfig{username, password,
    server_address}}."""
    message = _field(1, _field(1, image))
    if auth is not None:
        fields = _field(1, auth.username) + _field(2, auth.password)
        if auth.server_address:
            fields += _field(4, auth.server_address)
        message += _field(2, fields)
    return message


def image_ref(response: bytes) -> str:
    """PullImageResponse.image_ref (field 1), the image's id."""
    assert response[:1] == b"\n", response[:20]
    length, position = 0, 1
    for shift in range(0, 35, 7):
        byte = response[position]
        position += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    return response[position : position + length].decode()


def pull(socket: Path, image: str, auth: AuthConfig | None = None, timeout: float = 120.0) -> str:
    """Pull as the kubelet does; returns the image id, raises grpc.RpcError on failure."""
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        call = channel.unary_unary(
            PULL_IMAGE,
            request_serializer=lambda message: message,
            response_deserializer=lambda data: data,
        )
        response: bytes = call(pull_request(image, auth), timeout=timeout)
    return image_ref(response)
