"""`distributed-images credential`: make the cluster secret, and issue credentials from it.

    distributed-images credential --secret-file S --new-secret       # a random secret, mode 0600
    distributed-images credential --secret-file S --node ID --out F  # node ID's credential
    distributed-images credential --secret-file S --operator NAME    # for `status`, `preheat`

Run it where the cluster secret is kept (never on a node), and hand each node its own credential.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distributed_images.logs import level_field
from tracker import limits
from tracker.credentials import CredentialError, Role, issue, new_secret, read_secret

HELP = "make the cluster secret and issue node and operator credentials from it"


def _name(text: str) -> str:
    return limits.flag_parser(limits.node_id)(text) if text else text


@dataclass
class Config:
    secret_file: Path | None = field(
        default=None, metadata={"help": "the cluster secret (required)", "metavar": "FILE"}
    )
    new_secret: bool = field(
        default=False, metadata={"help": "write a new random secret to --secret-file"}
    )
    # Names the tracker would refuse (as a node id) are refused here, before a credential
    # nobody can use is handed out.
    node: str = field(
        default="",
        metadata={
            "parse": _name,
            "help": "issue this node id's credential",
            "metavar": "ID",
        },
    )
    operator: str = field(
        default="",
        metadata={"parse": _name, "help": "issue an operator credential", "metavar": "NAME"},
    )
    out: Path | None = field(
        default=None,
        metadata={
            "help": "write the credential here, mode 0600 (default: stdout)",
            "metavar": "FILE",
        },
    )
    log_level: str = level_field("warning")


def write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only; never replace an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def run(config: Config) -> str | None:
    """The credential asked for, or None after writing a new secret."""
    if config.secret_file is None:
        raise CredentialError("--secret-file is required")
    if config.new_secret:
        try:
            write_private(config.secret_file, new_secret() + b"\n")
        except OSError as e:
            raise CredentialError(f"cannot create {config.secret_file}: {e.strerror}") from None
        return None
    if bool(config.node) == bool(config.operator):
        raise CredentialError("name one of --node ID or --operator NAME")
    role, name = (Role.NODE, config.node) if config.node else (Role.OPERATOR, config.operator)
    return issue(read_secret(config.secret_file), role, name)


def main(config: Config) -> int:
    try:
        credential = run(config)
        if credential is not None and config.out is not None:
            try:
                write_private(config.out, credential.encode() + b"\n")
            except OSError as e:
                raise CredentialError(f"cannot create {config.out}: {e.strerror}") from None
        elif credential is not None:
            print(credential)
    except CredentialError as e:
        print(f"credential: {e}", file=sys.stderr)
        return 2
    return 0
