"""Why a command cannot start, said in one line that names the fix.

A command raises `StartupError` for a problem of the host it runs on rather than of its code: a
port another process holds, a directory its user may not write or read. The console script
prints the message on one line and exits 1, without a traceback: the message is the whole story,
and it names the user the process runs as, since in a container that is rarely the host's.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from distributed_images import pem
from tracker import address


class StartupError(Exception):
    """The command cannot start; the message says why and what to do."""


def usable_ca_file(path: Path | None, flag: str) -> None:
    """StartupError unless `path` (the value of `flag`, if given) is a PEM file of certificates:
    found now, not once the process dials and fails its handshakes over and over."""
    if path is None:
        return
    try:
        pem.check_ca_file(path)
    except ValueError as e:
        raise StartupError(f"{flag}: {e}") from None


def listen_failed(listen: str, flag: str, error: OSError) -> StartupError:
    """The error for a listener that could not bind `listen` (the value of `flag`)."""
    where = f"cannot listen on {listen}"
    if error.errno == errno.EADDRINUSE:
        return StartupError(
            f"{where}: the port is in use by another process: stop that process, "
            f"or choose another port with {flag}"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"{where}: no interface of this host has that address: "
            f"use 0.0.0.0, or one of this host's addresses, with {flag}"
        )
    if error.errno == errno.EACCES:
        return StartupError(
            f"{where}: uid {os.getuid()} may not bind ports below 1024: "
            f"choose a port above 1023 with {flag}"
        )
    return StartupError(f"{where}: {error.strerror or error}: check {flag}")


def check_port_free(listen: str, flag: str) -> None:
    """Raise StartupError when `listen` cannot be bound right now. For servers (gRPC) whose own
    bind error says less: the probe is closed at once, and the server binds a moment later."""
    try:
        host, port = address.split(listen)
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (ValueError, OSError) as e:
        raise StartupError(f"cannot listen on {listen}: {e}: check {flag}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as e:
            raise listen_failed(listen, flag, e) from None


def ownership(path: Path) -> str:
    """`owner uid 0, mode 0600` for `path`, or why it cannot be looked at."""
    try:
        info = os.stat(path)
    except OSError as e:
        return e.strerror or str(e)
    return f"owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}"


def writable_dir(path: Path, what: str, flag: str) -> None:
    """Make sure `path` is a directory this process can create files in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as e:
        raise not_writable(Path(e.filename or path), what, path, flag, e) from None


def not_writable(failed: Path, what: str, root: Path, flag: str, error: OSError) -> StartupError:
    """`failed` (the data dir or a file under it) cannot be written by this process."""
    uid, gid = os.getuid(), os.getgid()
    if error.errno == errno.EROFS:
        return StartupError(
            f"the {what} {root} is on a read-only filesystem: mount a writable volume there, "
            f"or choose another directory with {flag}"
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StartupError(
            f"the {what} {root} is on a full disk ({_free(root)} free): make room there, "
            f"or choose another directory with {flag}"
        )
    if error.errno not in (errno.EACCES, errno.EPERM):
        return StartupError(f"the {what} {root} cannot be used: {error}: check {flag}")
    nearest = failed
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    return StartupError(
        f"the {what} {root} is not writable by uid {uid} ({nearest}: {ownership(nearest)}): "
        f"run `chown -R {uid}:{gid} {root}` (on the host, the directory mounted there), "
        f"or choose another directory with {flag}"
    )


def _free(path: Path) -> str:
    """`12345 bytes` free on the disk `path` (or its nearest existing parent) is on."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return f"{shutil.disk_usage(path).free} bytes"
    except OSError as e:
        return f"unknown: {e.strerror or e}"


def readable_dir(path: Path, what: str, flag: str) -> None:
    """Make sure `path`, when it exists, is a directory this process can list."""
    try:
        with os.scandir(path):
            pass
    except FileNotFoundError:
        return  # not there yet: it is looked at again on every scan
    except NotADirectoryError:
        raise StartupError(f"the {what} {path} is not a directory: check {flag}") from None
    except PermissionError:
        uid = os.getuid()
        raise StartupError(
            f"the {what} {path} is not readable by uid {uid} ({ownership(path)}): "
            f"run `chmod a+rx {path}` (on the host, the directory mounted there), "
            f"or `chown -R {uid} {path}`"
        ) from None
