"""Two real libtorrent sessions on loopback exchange a chunk torrent built by our metainfo."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import libtorrent as lt
import pytest

from node.p2p import metainfo
from node.p2p import session as session_module
from node.p2p.metainfo import ChunkTorrent
from node.p2p.session import PeerSession, PeerStats
from node.store.chunking import MiB, chunk_name

BLOB_SIZE = 6 * MiB  # two chunks: 4 MiB and 2 MiB
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
async def sessions() -> AsyncIterator[list[PeerSession]]:
    made = [PeerSession("127.0.0.1", 0), PeerSession("127.0.0.1", 0), PeerSession("127.0.0.1", 0)]
    for session in made:
        await session.start()
    yield made
    for session in made:
        await session.close()


def write_chunk(directory: Path, index: int, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / chunk_name(DIGEST, index)
    path.write_bytes(data)
    return path


async def seed_chunk(
    seeder: PeerSession, directory: Path, hashed: bool = False
) -> tuple[ChunkTorrent, bytes]:
    """Seed the blob's first chunk, 4 MiB of random bytes, from `directory`; returns it and its
    bytes."""
    data = os.urandom(4 * MiB)
    torrent = metainfo.from_file(write_chunk(directory, 0, data), DIGEST, BLOB_SIZE, 0)
    await seeder.add(torrent, directory, seed=True, hashed=hashed)
    return torrent, data


async def test_a_chunk_swarms_from_a_seeder_to_two_leechers(
    sessions: list[PeerSession], tmp_path: Path
) -> None:
    seeder, first, second = sessions
    torrent, data = await seed_chunk(seeder, tmp_path / "seed")
    seed_address = ("127.0.0.1", seeder.port)
    await first.add(torrent, tmp_path / "a", seed=False, peers=[seed_address])
    await second.add(
        torrent, tmp_path / "b", seed=False, peers=[seed_address, ("127.0.0.1", first.port)]
    )
    await asyncio.wait_for(
        asyncio.gather(first.finished(torrent.infohash), second.finished(torrent.infohash)), 30
    )
    for leecher in ("a", "b"):
        got = (tmp_path / leecher / chunk_name(DIGEST, 0)).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert first.progress(torrent.infohash) == len(data)


async def test_same_bytes_give_the_same_infohash_anywhere(tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    here = metainfo.from_file(write_chunk(tmp_path / "x", 1, data), DIGEST, BLOB_SIZE, 1)
    there = metainfo.from_file(write_chunk(tmp_path / "y", 1, data), DIGEST, BLOB_SIZE, 1)
    assert here == there
    assert metainfo.parse(here.metainfo, DIGEST, BLOB_SIZE, 1) == here


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"private", b"privatf"),
        lambda m: m[:-1],
        lambda m: m + b"x",
        lambda m: m.replace(b"d4:info", b"d7:comment1:x4:info"),
    ],
)
def test_metainfo_that_is_not_the_canonical_torrent_is_refused(
    tmp_path: Path, tamper: object
) -> None:
    data = os.urandom(2 * MiB)
    torrent = metainfo.from_file(write_chunk(tmp_path, 1, data), DIGEST, BLOB_SIZE, 1)
    with pytest.raises(metainfo.MetainfoInvalid):
        metainfo.parse(tamper(torrent.metainfo), DIGEST, BLOB_SIZE, 1)  # type: ignore[operator]
    with pytest.raises(metainfo.MetainfoInvalid):
        metainfo.parse(torrent.metainfo, DIGEST, BLOB_SIZE, 0)  # the wrong chunk


async def test_stats_report_payload_and_open_connections_while_a_chunk_moves(
    tmp_path: Path,
) -> None:
    reports: list[PeerStats] = []
    seeder = PeerSession("127.0.0.1", 0)
    # Slowed to 1 MiB/s, the transfer spans the once-a-second reports.
    leecher = PeerSession("127.0.0.1", 0, download_limit=MiB, on_stats=reports.append)
    for session in (seeder, leecher):
        await session.start()
    try:
        data = os.urandom(2 * MiB)  # the blob's second chunk
        torrent = metainfo.from_file(write_chunk(tmp_path / "seed", 1, data), DIGEST, BLOB_SIZE, 1)
        await seeder.add(torrent, tmp_path / "seed", seed=True)
        await leecher.add(
            torrent, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seeder.port)]
        )
        await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
        await asyncio.sleep(1.5)  # the report that covers the last bytes
    finally:
        for session in (seeder, leecher):
            await session.close()
    assert sum(r.received for r in reports) >= len(data)
    assert max(r.peers for r in reports) >= 1
    assert sum(r.redundant for r in reports) == 0  # one peer: no block is asked for twice


async def test_add_returns_once_libtorrent_started_the_torrent_not_on_a_timeout(
    sessions: list[PeerSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seed is published as soon as `add` returns: it must accept peers by then, and `add`
    learns that from libtorrent's alerts, not by waiting its time out."""
    monkeypatch.setattr(session_module, "READY_TIMEOUT", 3600.0)
    seeder, leecher, _ = sessions
    torrent, _ = await asyncio.wait_for(seed_chunk(seeder, tmp_path / "seed"), 30)
    peers = [("127.0.0.1", seeder.port)]
    await asyncio.wait_for(leecher.add(torrent, tmp_path / "a", seed=False, peers=peers), 30)
    await asyncio.wait_for(leecher.finished(torrent.infohash), 30)


async def seed_pending(
    seeder: PeerSession, tmp_path: Path, hashed: bool = True
) -> tuple[ChunkTorrent, bytes, Path, Path]:
    """Seed a 4 MiB chunk from a blob's temporary directory, as a lease holder does; returns it,
    its bytes, that directory and where the store will publish the blob."""
    pending, final = tmp_path / "tmp" / "x", tmp_path / "blobs" / "y"
    torrent, data = await seed_chunk(seeder, pending, hashed)
    final.parent.mkdir()
    return torrent, data, pending, final


@pytest.mark.parametrize("linked", [True, False], ids=["old-path-links-there", "old-path-gone"])
async def test_a_seed_keeps_serving_once_its_blob_is_published_elsewhere(
    sessions: list[PeerSession], tmp_path: Path, linked: bool
) -> None:
    """The store renames a blob's directory into place and leaves a link behind; the seed keeps
    serving either through the link or, where none leads there, from the new directory."""
    seeder, leecher, _ = sessions
    torrent, data, pending, final = await seed_pending(seeder, tmp_path)
    if linked:
        pending.rename(final)
        pending.symlink_to(final, target_is_directory=True)
    else:
        shutil.copytree(pending, final)
        shutil.rmtree(pending)
    seeder.move(torrent.infohash, final)
    await leecher.add(torrent, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seeder.port)])
    await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
    assert (tmp_path / "leech" / chunk_name(DIGEST, 0)).read_bytes() == data


async def test_a_seed_whose_file_was_out_of_reach_a_moment_serves_again(
    sessions: list[PeerSession], tmp_path: Path
) -> None:
    """A peer asks for a piece while the seed's directory is being renamed into place: libtorrent
    stops the torrent on the missing file; once the link is there, the seed serves again."""
    seeder, leecher, _ = sessions
    # In seed mode: libtorrent opens the file only when a peer first asks for a piece.
    torrent, data, pending, final = await seed_pending(seeder, tmp_path, hashed=False)
    pending.rename(final)  # and the link is not there yet
    await leecher.add(torrent, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seeder.port)])
    handle = seeder._torrents[torrent.infohash].handle
    for _ in range(100):
        if handle.status().paused:  # stopped on the missing file
            break
        await asyncio.sleep(0.05)
    assert handle.status().paused, "the seed never missed its file"
    pending.symlink_to(final, target_is_directory=True)
    await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
    assert (tmp_path / "leech" / chunk_name(DIGEST, 0)).read_bytes() == data


@pytest.fixture
def no_connection_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions made from now on never connect in the session's once-a-second round: only a
    torrent's connect boost, when it is resumed, reaches the peers it was given."""
    settings = session_module._settings

    def without_rounds(*args: object) -> dict[str, object]:
        return {**settings(*args), "connection_speed": 0}  # type: ignore[arg-type]

    monkeypatch.setattr(session_module, "_settings", without_rounds)


async def test_a_download_connects_to_its_peers_as_it_is_added(
    sessions: list[PeerSession], tmp_path: Path, no_connection_rounds: None
) -> None:
    """Resumed only once libtorrent has checked it, a new torrent connects to its peers at once
    rather than in the session's next round, up to a second later."""
    seeder = sessions[0]
    leecher = PeerSession("127.0.0.1", 0)
    await leecher.start()
    try:
        torrent, data = await seed_chunk(seeder, tmp_path / "seed")
        peers = [("127.0.0.1", seeder.port)]
        await leecher.add(torrent, tmp_path / "leech", seed=False, peers=peers)
        await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
    finally:
        await leecher.close()
    assert (tmp_path / "leech" / chunk_name(DIGEST, 0)).read_bytes() == data


async def test_a_download_over_a_file_left_by_an_earlier_attempt_starts_at_once(
    sessions: list[PeerSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file already there must be checked, which libtorrent does only once the torrent is
    resumed: `add` resumes it at once rather than waiting for a check that never comes."""
    monkeypatch.setattr(session_module, "READY_TIMEOUT", 3600.0)
    seeder, leecher, _ = sessions
    torrent, data = await seed_chunk(seeder, tmp_path / "seed")
    write_chunk(tmp_path / "leech", 0, data[: MiB + 1000])
    peers = [("127.0.0.1", seeder.port)]
    await asyncio.wait_for(leecher.add(torrent, tmp_path / "leech", seed=False, peers=peers), 30)
    await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
    assert (tmp_path / "leech" / chunk_name(DIGEST, 0)).read_bytes() == data


@pytest.mark.parametrize("hashed", [True, False], ids=["hashed", "seed-mode"])
async def test_a_seed_keeps_its_peers_when_its_blob_is_stored(
    sessions: list[PeerSession], tmp_path: Path, hashed: bool
) -> None:
    """A lease holder seeds its chunk as it publishes it, then stores the whole blob while peers
    are still downloading the chunk: they must not be cut off (a recheck would drop them)."""
    seeder = sessions[0]
    leecher = PeerSession("127.0.0.1", 0, download_limit=MiB)  # 4 s for the chunk
    await leecher.start()
    try:
        torrent, data, pending, final = await seed_pending(seeder, tmp_path, hashed)
        peers = [("127.0.0.1", seeder.port)]
        await leecher.add(torrent, tmp_path / "leech", seed=False, peers=peers)
        handle = seeder._torrents[torrent.infohash].handle
        for _ in range(100):
            if handle.status().num_peers:
                break
            await asyncio.sleep(0.02)
        pending.rename(final)
        pending.symlink_to(final, target_is_directory=True)
        seeder.move(torrent.infohash, final)
        for _ in range(25):
            await asyncio.sleep(0.02)
            assert handle.status().num_peers == 1, "the seed dropped its peer"
        await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
    finally:
        await leecher.close()
    assert (tmp_path / "leech" / chunk_name(DIGEST, 0)).read_bytes() == data


async def test_a_download_removed_while_it_is_being_added_is_left_alone(
    sessions: list[PeerSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull that gives up on a chunk removes its torrent, maybe while `add` is between
    libtorrent's check and the resume: `add` then returns, rather than resume a dead handle."""
    seeder, leecher, _ = sessions
    torrent, _ = await seed_chunk(seeder, tmp_path / "seed")
    saw = session_module._Starting.saw

    def saw_then_remove(starting: session_module._Starting, kind: str) -> None:
        saw(starting, kind)
        if starting.resumable.done():  # `add` is due to resume it: remove it first
            leecher.remove(torrent.infohash)
            time.sleep(0.2)  # holding the event loop, so libtorrent is done removing it

    monkeypatch.setattr(session_module._Starting, "saw", saw_then_remove)
    peers = [("127.0.0.1", seeder.port)]
    await asyncio.wait_for(leecher.add(torrent, tmp_path / "a", seed=False, peers=peers), 30)
    assert not leecher.has(torrent.infohash)


async def test_a_download_cancelled_while_it_is_being_added_leaves_no_torrent_behind(
    sessions: list[PeerSession], tmp_path: Path
) -> None:
    """A pull that stops swarming a chunk (to fetch it from upstream) cancels its `add`, maybe
    while libtorrent adds the torrent on a worker thread: the torrent went into the session all
    the same, unknown to the node, and the seed added once the chunk was fetched got that
    paused, empty download back. Published as the chunk's source, it sent its peers nothing,
    and they waited out their stall timeout."""
    node, leecher, _ = sessions
    data = os.urandom(4 * MiB)
    torrent = metainfo.from_file(write_chunk(tmp_path / "made", 0, data), DIGEST, BLOB_SIZE, 0)
    adding = asyncio.ensure_future(node.add(torrent, tmp_path / "node", seed=False))
    await asyncio.sleep(0)  # `add` is on its worker thread now
    adding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await adding
    node.remove(torrent.infohash)  # as the pull does when it stops swarming a chunk
    await asyncio.sleep(0.2)  # the worker thread is done by now

    write_chunk(tmp_path / "node", 0, data)  # fetched from upstream
    await asyncio.wait_for(node.add(torrent, tmp_path / "node", seed=True, hashed=True), 30)
    peers = [("127.0.0.1", node.port)]
    await leecher.add(torrent, tmp_path / "leecher", seed=False, peers=peers)
    await asyncio.wait_for(leecher.finished(torrent.infohash), 30)
    assert (tmp_path / "leecher" / chunk_name(DIGEST, 0)).read_bytes() == data


async def test_the_connected_peers_are_listed_with_the_bytes_they_exchanged(
    tmp_path: Path,
) -> None:
    """What the status page shows of the swarm: who this node is connected to, and how much
    moved each way (two seeds part once the download is done: it is watched under way)."""
    seeder = PeerSession("127.0.0.1", 0)
    leecher = PeerSession("127.0.0.1", 0, download_limit=MiB)  # 2 MiB take two seconds
    for session in (seeder, leecher):
        await session.start()
    try:
        assert await leecher.connected_peers() == []
        data = os.urandom(2 * MiB)
        torrent = metainfo.from_file(write_chunk(tmp_path / "seed", 1, data), DIGEST, BLOB_SIZE, 1)
        await seeder.add(torrent, tmp_path / "seed", seed=True)
        await leecher.add(
            torrent, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seeder.port)]
        )
        deadline = time.monotonic() + 30
        while not any(p.downloaded >= MiB for p in await leecher.connected_peers()):
            assert time.monotonic() < deadline, await leecher.connected_peers()
            await asyncio.sleep(0.1)
        [peer] = await leecher.connected_peers()
        assert peer.address == f"127.0.0.1:{seeder.port}"  # it dialled the seeder's listener
        assert peer.torrents == 1 and peer.uploaded < MiB
        [other] = await seeder.connected_peers()
        assert other.uploaded >= MiB and other.downloaded < MiB
    finally:
        for session in (seeder, leecher):
            await session.close()


async def test_peers_speak_plain_bittorrent_with_no_encrypted_handshake(tmp_path: Path) -> None:
    """Each chunk torrent opens its own connections: an encrypted handshake (Diffie-Hellman,
    then RC4) on each would be paid per chunk and peer, for bytes their hashes check anyway."""
    seeder = PeerSession("127.0.0.1", 0)
    leecher = PeerSession("127.0.0.1", 0, download_limit=MiB)  # still connected when looked at
    for session in (seeder, leecher):
        await session.start()
    try:
        data = os.urandom(2 * MiB)
        torrent = metainfo.from_file(write_chunk(tmp_path / "seed", 1, data), DIGEST, BLOB_SIZE, 1)
        await seeder.add(torrent, tmp_path / "seed", seed=True)
        await leecher.add(
            torrent, tmp_path / "leech", seed=False, peers=[("127.0.0.1", seeder.port)]
        )
        handle = leecher._torrents[torrent.infohash].handle
        deadline = time.monotonic() + 30
        while not (peers := handle.get_peer_info()) or not peers[0].total_download:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        encrypted = lt.peer_info.rc4_encrypted | lt.peer_info.plaintext_encrypted
        assert not peers[0].flags & encrypted
    finally:
        for session in (seeder, leecher):
            await session.close()
