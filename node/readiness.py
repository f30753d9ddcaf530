"""Whether a node serves clients, and why not: the answer of GET /readyz and of the status page."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Readiness:
    ready: bool
    why: str
    problems: tuple[str, ...] = ()  # what needs a person's attention, one line each, with the fix

    def text(self) -> str:
        """The body of GET /readyz: `ready` or `not ready: why`, then one line per problem."""
        first = "ready" if self.ready else f"not ready: {self.why}"
        return "".join(f"{line}\n" for line in (first, *self.problems))
