from __future__ import annotations

import pytest

from node.errors import DigestInvalid, NameInvalid, RangeInvalid, ReferenceInvalid
from node.oci import mediatypes
from node.oci.ranges import parse_range
from node.oci.reference import Reference, validate_digest, validate_name, validate_namespace

GOOD_DIGEST = "sha256:" + "0" * 64


@pytest.mark.parametrize("name", ["app", "test/app", "a/b/c", "my-org/my_app", "a.b/c__d"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "App", "../etc", "a/../b", "a//b", "/a", "a/", "-a", "a" * 256, "a b", "a%2f"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(name)


@pytest.mark.parametrize(
    "digest", ["sha256:00", "sha256:" + "G" * 64, "sha256" + "0" * 64, "", "sha256:" + "0" * 65]
)
def test_invalid_digests(digest: str) -> None:
    with pytest.raises(DigestInvalid):
        validate_digest(digest)


def test_other_algorithms_are_refused_as_unsupported() -> None:
    with pytest.raises(DigestInvalid, match="unsupported"):
        validate_digest("sha512:" + "0" * 128)


def test_references() -> None:
    assert Reference.parse("1.25").is_digest is False
    assert Reference.parse(GOOD_DIGEST).is_digest is True
    for bad in ("-tag", "a" * 129, "tag!", ".x"):
        with pytest.raises(ReferenceInvalid):
            Reference.parse(bad)


@pytest.mark.parametrize("ns", ["docker.io", "127.0.0.1:5000", "[::1]:5000", "my-reg.internal"])
def test_valid_namespaces(ns: str) -> None:
    assert validate_namespace(ns) == ns


@pytest.mark.parametrize("ns", ["a/b", "http://x", "a b", "x:port", ""])
def test_invalid_namespaces(ns: str) -> None:
    with pytest.raises(NameInvalid):
        validate_namespace(ns)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=90-1000", (90, 100)),
        ("bytes=-1000", (0, 100)),
    ],
)
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=10-5", "bytes=-0", "bytes=-", "items=0-1", "bytes=0-1,3-4", "x"]
)
def test_bad_ranges(header: str) -> None:
    with pytest.raises(RangeInvalid) as caught:
        parse_range(header, 100)
    assert caught.value.size == 100


def test_accept_lists_keep_client_order_and_default_to_every_type() -> None:
    assert mediatypes.accepted([]) == list(mediatypes.MANIFEST_TYPES)
    assert mediatypes.accepted(
        [f"{mediatypes.DOCKER_MANIFEST}, {mediatypes.OCI_MANIFEST};q=0.5"]
    ) == [mediatypes.DOCKER_MANIFEST, mediatypes.OCI_MANIFEST]


def test_sniff_manifest_types() -> None:
    assert mediatypes.sniff(b'{"manifests": []}') == mediatypes.OCI_INDEX
    assert mediatypes.sniff(b'{"mediaType": "x/y", "layers": []}') == "x/y"
    assert mediatypes.sniff(b"not json") == "application/octet-stream"
