"""Settings of the access checks on private content; the node's `Config` composes this."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AccessConfig:
    access_ttl: float = field(
        default=180.0,
        metadata={
            "help": "seconds the upstream's verdict on a credential's access to a repository,"
            " and on whether a repository is public, is trusted before it is asked again",
            "metavar": "S",
        },
    )
    requester_only: list[str] = field(
        default_factory=list,
        metadata={
            "help": "a registry (NS, or * for all) whose private content is served only to"
            " clients with their own credentials: the node's (--auth-file) never serve clients"
            " there (repeatable)",
            "metavar": "NS",
        },
    )
