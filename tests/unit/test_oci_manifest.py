"""What counts as a manifest (`node.oci.manifest.check_manifest`)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import ManifestInvalid
from node.oci import mediatypes
from node.oci.manifest import check_manifest

DIGEST = "sha256:" + "a" * 64
DESCRIPTOR = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": DIGEST, "size": 3}
IMAGE = {"schemaVersion": 2, "config": DESCRIPTOR, "layers": [DESCRIPTOR]}
INDEX = {"schemaVersion": 2, "manifests": [DESCRIPTOR]}


def _body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_manifests_and_indexes_of_the_four_types_are_manifests() -> None:
    for media_type in (mediatypes.OCI_MANIFEST, mediatypes.DOCKER_MANIFEST):
        assert check_manifest(_body({**IMAGE, "mediaType": media_type})) == media_type
    for media_type in (mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST_LIST):
        assert check_manifest(_body({**INDEX, "mediaType": media_type})) == media_type


def test_a_manifest_without_a_media_type_is_typed_by_content_type_or_shape() -> None:
    assert check_manifest(_body(IMAGE)) == mediatypes.OCI_MANIFEST
    assert check_manifest(_body(INDEX)) == mediatypes.OCI_INDEX
    docker = check_manifest(_body(IMAGE), mediatypes.DOCKER_MANIFEST)
    assert docker == mediatypes.DOCKER_MANIFEST
    assert check_manifest(_body(IMAGE), "text/html") == mediatypes.OCI_MANIFEST


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>503 Service Unavailable</body></html>",
        b"",
        b"[" * 100_000 + b"]" * 100_000,
        b"[]",
        _body({**IMAGE, "schemaVersion": 1}),
        _body({**IMAGE, "schemaVersion": True}),
        _body({k: v for k, v in IMAGE.items() if k != "schemaVersion"}),
        _body({**IMAGE, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}),
        _body({**IMAGE, "mediaType": ["x"]}),
        _body({**INDEX, "mediaType": mediatypes.OCI_INDEX, "manifests": None}),
        _body({**IMAGE, "mediaType": mediatypes.OCI_INDEX}),  # an index without manifests
        _body({**IMAGE, "config": None}),
        _body({**IMAGE, "layers": [{**DESCRIPTOR, "digest": "sha256:../../etc"}]}),
        _body({**IMAGE, "layers": [{**DESCRIPTOR, "size": -1}]}),
        _body({**IMAGE, "layers": [{**DESCRIPTOR, "size": "3"}]}),
        _body({**IMAGE, "layers": [{**DESCRIPTOR, "size": False}]}),
        _body({**IMAGE, "layers": [{**DESCRIPTOR, "mediaType": 7}]}),
        _body({**IMAGE, "layers": ["sha256:" + "a" * 64]}),
    ],
)
def test_anything_else_is_manifest_invalid(body: bytes) -> None:
    with pytest.raises(ManifestInvalid):
        check_manifest(body, mediatypes.OCI_MANIFEST)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(max_size=12), children),
        max_leaves=30,
    )
)
def test_any_json_is_a_manifest_or_manifest_invalid(document: object) -> None:
    body = _body(document)
    try:
        media_type = check_manifest(body)
    except ManifestInvalid:
        return
    assert media_type in mediatypes.MANIFEST_TYPES
