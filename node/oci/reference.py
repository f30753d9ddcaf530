"""Names, tags, digests and namespaces as the OCI distribution spec defines them.

Every pattern here matches in time linear in its input: each is either one character class, or
has only possessive quantifiers (`++`, `*+`) over alternatives that the next character decides,
so the regular expression engine never backtracks. The spec's own grammar for a host name
(`(label\\.?)+`) can split `aaaa` into labels in exponentially many ways; a backtracking matcher
took seconds for a 26-character `ns`. `tests/unit/test_parsers_fuzz.py` checks each against the
spec's grammar and on pathological inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node.errors import DigestInvalid, NameInvalid, ReferenceInvalid

_COMPONENT = r"[a-z0-9]++(?:(?:__|[._]|-++)[a-z0-9]++)*+"
NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*+")
TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]++(?:[+._-][a-z0-9]++)*+:[a-zA-Z0-9=_-]++")
SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
# A registry host as containerd sends it in ?ns=: a DNS name or IP, an optional port. Labels are
# letters and digits with inner hyphens, one dot between two labels, and a trailing dot allowed.
NAMESPACE = re.compile(
    r"(?:[a-zA-Z0-9]++(?:(?:-++|\.)[a-zA-Z0-9]++)*+\.?+|\[[0-9a-fA-F:.]++\])(?::[0-9]{1,5})?+"
)
MAX_NAME = 255
MAX_NAMESPACE = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME or not NAME.fullmatch(name):
        raise NameInvalid("invalid repository name", {"name": name[:MAX_NAME]})
    return name


def validate_digest(digest: str) -> str:
    """Only sha256 content is stored; other well-formed algorithms are refused plainly."""
    if SHA256.fullmatch(digest):
        return digest
    if DIGEST.fullmatch(digest) and not digest.startswith("sha256:"):
        raise DigestInvalid("unsupported digest algorithm", {"digest": digest[:200]})
    raise DigestInvalid("invalid digest", {"digest": digest[:200]})


def validate_namespace(ns: str) -> str:
    if not is_namespace(ns):
        raise NameInvalid("invalid registry namespace", {"ns": ns[:MAX_NAMESPACE]})
    return ns


def is_namespace(ns: str) -> bool:
    return len(ns) <= MAX_NAMESPACE and NAMESPACE.fullmatch(ns) is not None


def is_digest(reference: str) -> bool:
    return ":" in reference


@dataclass(frozen=True)
class Reference:
    """A manifest reference: either a tag or a digest, validated."""

    value: str

    @classmethod
    def parse(cls, reference: str) -> Reference:
        if is_digest(reference):
            validate_digest(reference)
        elif not TAG.fullmatch(reference):
            raise ReferenceInvalid("invalid tag", {"tag": reference[:200]})
        return cls(reference)

    @property
    def is_digest(self) -> bool:
        return is_digest(self.value)
