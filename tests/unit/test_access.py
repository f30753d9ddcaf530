"""The parts of node.access that need no upstream: clients' credentials, the verdict cache, what
repositories hold, and the private marks kept across restarts."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from node.access.contents import Contents
from node.access.marks import PrivateMarks
from node.access.verdicts import Verdicts
from node.upstream.credential import (
    ANONYMOUS,
    NODE,
    RequesterBasic,
    RequesterBearer,
    from_authorization,
)

SECRET = "pa55-w0rd-that-must-not-show"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_and_bearer_credentials_are_read_from_the_header() -> None:
    credential = from_authorization(basic("alice", SECRET))
    assert isinstance(credential, RequesterBasic)
    assert credential.pair == ("alice", SECRET)
    bearer = from_authorization("Bearer abc.def")
    assert isinstance(bearer, RequesterBearer)
    assert bearer.authorization == "Bearer abc.def"


@pytest.mark.parametrize(
    "header",
    [None, "", basic("", ""), "Basic", "Basic !!!", "Basic " + base64.b64encode(b"x").decode(),
     "Negotiate abc", "Bearer ", "Basic " + "A" * 9000],
)  # fmt: skip
def test_no_usable_credentials_is_none(header: str | None) -> None:
    assert from_authorization(header) is None


def test_a_credential_shows_nothing_of_itself() -> None:
    credential = from_authorization(basic("alice", SECRET))
    assert credential is not None
    assert SECRET not in repr(credential) and "alice" not in repr(credential)
    assert SECRET not in credential.key and "alice" not in credential.key
    assert SECRET not in repr(from_authorization("Bearer " + SECRET))


def test_keys_tell_credentials_apart_and_alike() -> None:
    alice = from_authorization(basic("alice", SECRET))
    assert alice == from_authorization(basic("alice", SECRET))
    assert alice != from_authorization(basic("alice", SECRET + "x"))
    assert alice != from_authorization("Bearer " + SECRET)
    assert len({ANONYMOUS.key, NODE.key, alice.key if alice else ""}) == 3


async def test_concurrent_questions_with_one_key_share_one_answer() -> None:
    verdicts: Verdicts[str] = Verdicts(ttl=60)
    asked = 0

    async def ask() -> str:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.05)
        return "allowed"

    answers = await asyncio.gather(*(verdicts.get("key", ask) for _ in range(20)))
    assert answers == ["allowed"] * 20
    assert await verdicts.get("key", ask) == "allowed"
    assert asked == 1


async def test_a_verdict_expires_and_a_non_verdict_is_not_kept() -> None:
    verdicts: Verdicts[str] = Verdicts(ttl=0.05, keep=lambda value: value != "missing")
    answers = iter(["missing", "allowed", "denied"])

    async def ask() -> str:
        return next(answers)

    assert await verdicts.get("key", ask) == "missing"
    assert await verdicts.get("key", ask) == "allowed"  # "missing" was not kept
    assert await verdicts.get("key", ask) == "allowed"
    await asyncio.sleep(0.1)
    assert await verdicts.get("key", ask) == "denied"
    last = verdicts.last("key")
    assert last is not None and last.value == "denied"


async def test_a_question_runs_on_when_its_asker_goes_away() -> None:
    verdicts: Verdicts[str] = Verdicts(ttl=60)
    release = asyncio.Event()

    async def ask() -> str:
        await release.wait()
        return "allowed"

    first = asyncio.create_task(verdicts.get("key", ask))
    await asyncio.sleep(0)
    second = asyncio.create_task(verdicts.get("key", ask))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == "allowed"


async def test_a_failed_question_reaches_every_asker_and_is_asked_again() -> None:
    verdicts: Verdicts[str] = Verdicts(ttl=60)
    calls = 0

    async def ask() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("upstream down")
        return "allowed"

    results = await asyncio.gather(
        *(verdicts.get("key", ask) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await verdicts.get("key", ask) == "allowed"


def test_a_repository_holds_what_its_manifests_name_and_stays_bounded() -> None:
    manifest = json.dumps(
        {"config": {"digest": "sha256:" + "c" * 64, "size": 2}, "layers": [
            {"digest": "sha256:" + "1" * 64, "size": 3}]}
    ).encode()  # fmt: skip
    contents = Contents(limit=5)
    contents.saw("r", "a/app", "sha256:" + "m" * 64, manifest)
    assert contents.holds("r", "a/app", "sha256:" + "1" * 64)
    assert contents.holds("r", "a/app", "sha256:" + "c" * 64)
    assert not contents.holds("r", "b/app", "sha256:" + "1" * 64)
    assert not contents.opened("r", "a/app", "sha256:" + "1" * 64)
    contents.saw("r", "s/app", "sha256:" + "s" * 64, manifest, seeded=True)
    assert contents.opened("r", "s/app", "sha256:" + "1" * 64)
    contents.confirmed("r", "c/app", "sha256:" + "9" * 64)  # the oldest entries go first
    assert not contents.holds("r", "a/app", "sha256:" + "m" * 64)
    assert contents.holds("r", "c/app", "sha256:" + "9" * 64)


def test_private_marks_survive_a_restart_and_an_unreadable_file_is_no_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "marks.json"
    marks = PrivateMarks(path, limit=2)
    marks.mark("r/a")
    marks.mark("r/b")
    marks.unmark("r/a")
    marks.mark("r/c")
    again = PrivateMarks(path)
    assert "r/b" in again and "r/c" in again and "r/a" not in again
    path.write_text("{not json")
    assert "r/b" not in PrivateMarks(path)
    assert not list(tmp_path.glob("*.tmp"))
