"""Property-based tests of every parser of untrusted input: repository names, references, `ns`,
digests, Range, Accept, the page size of tag lists, auth challenges, archive member names and
the references archives carry in their annotations, and the router's path patterns.

Each parser is checked three ways: it raises nothing but its own domain error, it accepts exactly
what the spec's grammar accepts (the grammar as the spec writes it is the oracle, on inputs short
enough for its backtracking to be harmless), and it finishes pathological inputs, built to make a
backtracking matcher take exponential or quadratic time, within hypothesis's deadline. A linear
parser takes microseconds for these; the deadline is a thousand times that, and the backtracking
matchers they replace took seconds for 26 characters and hours for 40.
"""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.errors import (
    DigestInvalid,
    NameInvalid,
    PaginationInvalid,
    RangeInvalid,
    ReferenceInvalid,
)
from node.oci import mediatypes
from node.oci.listing import page_query
from node.oci.ranges import parse_range
from node.oci.reference import Reference, validate_digest, validate_name, validate_namespace
from node.oci.routes import RegistryAPI
from node.seed.dockersave import _named_digest
from node.seed.errors import ArchiveInvalid
from node.seed.members import clean
from node.seed.refs import is_bare_tag, normalize
from node.upstream.auth import Challenge
from node.upstream.client import MAX_TAGS
from tracker import limits
from tracker.errors import InvalidArgument

# The grammars as the distribution spec and RFC 1123 write them: backtracking, so only ever run
# on short inputs here.
_SPEC_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
SPEC_NAME = re.compile(rf"{_SPEC_COMPONENT}(?:/{_SPEC_COMPONENT})*")
SPEC_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
SPEC_NAMESPACE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.?)+(?::[0-9]{1,5})?"
    r"|\[[0-9a-fA-F:.]+\](?::[0-9]{1,5})?"
)

QUICK = settings(deadline=timedelta(seconds=1), max_examples=300)
NAME_CHARS = "ab09._-/A:@ "
HOST_CHARS = "aZ09.-:[]!_"
DIGEST_CHARS = "ab09:+._-=Z!"


def pathological(alphabet: str, units: list[str], max_repeat: int = 4000) -> st.SearchStrategy[str]:
    """A prefix, one unit repeated up to `max_repeat` times, and a tail: the shape that makes a
    backtracking matcher try every way of splitting the repeated part."""
    return st.builds(
        lambda head, unit, count, tail: head + unit * count + tail,
        st.text(alphabet, max_size=3),
        st.sampled_from(units),
        st.integers(min_value=1, max_value=max_repeat),
        st.text(alphabet, max_size=3),
    )


def _accepts(check: object, value: str, error: type[Exception]) -> bool:
    try:
        check(value)  # type: ignore[operator]
    except error:
        return False
    return True


# -- repository names


@QUICK
@given(st.text(NAME_CHARS, max_size=24))
def test_names_are_what_the_spec_grammar_accepts(name: str) -> None:
    expected = len(name) <= 255 and SPEC_NAME.fullmatch(name) is not None
    assert _accepts(validate_name, name, NameInvalid) is expected


@QUICK
@given(pathological(NAME_CHARS, ["a-", "a_", "a__", "a.", "a--", "a/", "-", "__", "a"], 200))
def test_names_are_checked_in_linear_time(name: str) -> None:
    _accepts(validate_name, name, NameInvalid)


# -- digests and references


@QUICK
@given(st.text(DIGEST_CHARS, max_size=24))
def test_digests_are_what_the_spec_grammar_accepts(digest: str) -> None:
    accepted = _accepts(validate_digest, digest, DigestInvalid)
    assert accepted is bool(re.fullmatch(r"sha256:[a-f0-9]{64}", digest))
    if not accepted:
        with pytest.raises(DigestInvalid) as caught:
            validate_digest(digest)
        unsupported = caught.value.message == "unsupported digest algorithm"
        assert unsupported is (SPEC_DIGEST.fullmatch(digest) is not None)


@QUICK
@given(pathological(DIGEST_CHARS, ["a-", "a+", "a.", "a-a", "--", "a", "a:"]))
def test_digests_and_references_are_checked_in_linear_time(text: str) -> None:
    _accepts(validate_digest, text, DigestInvalid)
    _accepts(Reference.parse, text, (DigestInvalid, ReferenceInvalid))  # type: ignore[arg-type]
    _accepts(limits.digest, text, InvalidArgument)


@QUICK
@given(st.text(max_size=140))
def test_a_reference_is_a_tag_or_a_digest(text: str) -> None:
    try:
        reference = Reference.parse(text)
    except (DigestInvalid, ReferenceInvalid):
        return
    assert reference.is_digest or re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", text)


# -- ns: registry hosts


@QUICK
@given(st.text(HOST_CHARS, max_size=12))
def test_namespaces_are_what_the_host_grammar_accepts(ns: str) -> None:
    expected = SPEC_NAMESPACE.fullmatch(ns) is not None
    assert _accepts(validate_namespace, ns, NameInvalid) is expected


@QUICK
@given(pathological(HOST_CHARS, ["a", "a-", "a.", "a-a.", "[:", ":", "0"]))
def test_namespaces_are_checked_in_linear_time(ns: str) -> None:
    _accepts(validate_namespace, ns, NameInvalid)


def test_the_namespace_that_held_the_event_loop_for_seconds() -> None:
    for length in (26, 40, 255):
        with pytest.raises(NameInvalid):
            validate_namespace("a" * length + "!")


# -- Range


DIGITS = st.one_of(st.text("0123456789", max_size=25), pathological("0123456789", ["9", "0"], 6000))


@QUICK
@given(
    st.one_of(
        st.text("bytes=0123456789-, ", max_size=40),
        st.builds(lambda a, b: f"bytes={a}-{b}", DIGITS, DIGITS),
    ),
    st.integers(min_value=1, max_value=1 << 44),
)
@example("bytes=" + "9" * 5000 + "-", 100)  # more digits than Python converts to an int
@example("bytes=0-" + "9" * 5000, 100)
def test_a_range_is_one_span_inside_the_blob_or_range_invalid(header: str, size: int) -> None:
    try:
        span = parse_range(header, size)
    except RangeInvalid as e:
        assert e.size == size
        return
    assert span is not None
    start, end = span
    assert 0 <= start < end <= size


# -- Accept


@QUICK
@given(
    st.lists(
        st.one_of(
            st.sampled_from([*mediatypes.MANIFEST_TYPES, "*/*", "application/json", ""]),
            st.text(max_size=30),
        ),
        max_size=3000,
    ),
    st.integers(min_value=1, max_value=8),
)
def test_accept_headers_yield_known_manifest_types_in_the_clients_order(
    items: list[str], headers: int
) -> None:
    step = max(1, len(items) // headers)
    accept = [", ".join(items[i : i + step]) for i in range(0, len(items), step)]
    types = mediatypes.accepted(accept)
    assert set(types) <= set(mediatypes.MANIFEST_TYPES)
    assert len(types) == len(set(types)) >= 1
    named = [t.partition(";")[0].strip() for t in ",".join(accept).split(",")]
    ordered = [t for t in dict.fromkeys(named) if t in mediatypes.MANIFEST_TYPES]
    assert types[: len(ordered)] == ordered


# -- upstream auth challenges


@QUICK
@given(
    st.one_of(
        st.text(max_size=200),
        pathological('ab=" \\,', ["a", 'a="', 'a="\\', ' b=\\"', "a=", '"'], 16000),
    )
)
def test_challenges_parse_in_linear_time(header: str) -> None:
    challenge = Challenge.parse("Bearer " + header)
    assert challenge.scheme == "bearer"
    assert all(re.fullmatch(r"\w+", key) for key in challenge.params)


def test_a_challenge_with_quoted_escapes() -> None:
    challenge = Challenge.parse(r'Bearer realm="https://a/t",scope="x\"y",service=reg')
    assert challenge.params == {"realm": "https://a/t", "scope": r"x\"y", "service": "reg"}


# -- archives: member names, references in annotations and RepoTags


@QUICK
@given(st.one_of(st.text(max_size=100), pathological("a/.0f", ["../", "a/", "/", "./", "a" * 64])))
def test_member_names_are_cleaned_or_refused(name: str) -> None:
    try:
        path = clean(name)
    except ArchiveInvalid:
        return
    assert not path.startswith(("/", "../")) and path != ".."
    base = path.rpartition("/")[2].removesuffix(".json")
    digest = _named_digest(path)
    assert digest is None or digest == "sha256:" + base


@QUICK
@given(
    st.one_of(
        st.text("ab09./:@_-A", max_size=40),
        pathological("ab09./:@_-", ["a-", "a.", "a/", "a:", "a@", ":", "a__"], 3000),
    )
)
def test_references_in_archives_normalize_or_are_refused(text: str) -> None:
    is_bare_tag(text)
    try:
        ref = normalize(text)
    except (NameInvalid, ReferenceInvalid):
        return
    if ref is not None:
        assert validate_name(ref.repo) == ref.repo
        assert Reference.parse(ref.tag).is_digest is False


# -- the router's path patterns


@pytest.fixture(scope="module")
def router() -> web.UrlDispatcher:
    api = RegistryAPI(None, None, None, None, lambda: True)  # type: ignore[arg-type]
    return api.application().router


@given(
    st.one_of(
        st.text("abc/-_.:", max_size=60),
        pathological("a/", ["a/manifests/", "a/blobs/", "/blobs/uploads/", "//", "a/"], 600),
    )
)
@settings(deadline=timedelta(seconds=1), max_examples=100)
async def test_request_paths_are_routed_in_linear_time(
    router: web.UrlDispatcher, tail: str
) -> None:
    request = make_mocked_request("GET", "/v2/" + tail)
    match = await router.resolve(request)
    assert match.http_exception is None or match.http_exception.status in (404, 405)


# -- pagination of tag lists and the catalog


@QUICK
@given(st.one_of(st.text(max_size=30), pathological("0123456789²", ["9", "0", "²"], 4000)))
@example("²")  # a digit to str.isdigit, none to int()
def test_page_sizes_are_counts_or_pagination_invalid(n: str) -> None:
    request = make_mocked_request("GET", f"/v2/a/tags/list?{urlencode({'n': n})}")
    try:
        count, _ = page_query(request)
    except PaginationInvalid:
        return
    assert count is not None and 0 <= count <= MAX_TAGS
