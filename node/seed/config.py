"""Settings of the images directory seeder; the node's `Config` composes this dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

SEED_FIRST = "seed-first"
UPSTREAM_FIRST = "upstream-first"
PRECEDENCES = (SEED_FIRST, UPSTREAM_FIRST)


def parse_precedence(text: str) -> str:
    value = text.strip().lower()
    if value not in PRECEDENCES:
        raise ValueError(f"expected {' or '.join(PRECEDENCES)}, got {text!r}")
    return value


@dataclass
class SeedConfig:
    seed_precedence: str = field(
        default=SEED_FIRST,
        metadata={
            "help": "who answers a tag of this node's images directory: seed-first (the"
            " archive, never the upstream) or upstream-first (the archive only when the upstream"
            " fails); tags seeded by other nodes always come after the upstream",
            "parse": parse_precedence,
            "metavar": "ORDER",
        },
    )
    seed_scan_interval: float = field(
        default=1.0,
        metadata={
            "above": 0,
            "help": "seconds between two scans of the images directory",
            "metavar": "S",
        },
    )
    seed_workers: int = field(
        default=2,
        metadata={"min": 1, "help": "blobs imported from archives at once", "metavar": "N"},
    )

    @property
    def seed_first(self) -> bool:
        return self.seed_precedence == SEED_FIRST
