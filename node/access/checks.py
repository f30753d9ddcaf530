"""Who may read what: every request for a repository's manifest or blob passes here first.

    public repository   (the upstream serves it anonymously)  ->  served to anyone
    private repository  (the upstream refuses anonymous reads) ->  served only to a request whose
                        credentials the upstream accepts for that repository now: the client's
                        own, else the node's (`--auth-file`, unless the registry is
                        `--requester-only`); with neither, a 401 challenge
    content by digest   ->  also only if it belongs to that repository: named by a manifest this
                        node served there (`Contents`), seeded here, or confirmed by the upstream
    seeded content      (an images directory's, here or a tag seeded on another node)  ->  the
                        operator's: served to anyone, and the upstream is not asked

Each answer is one cheap upstream request (a HEAD of what the client asked for, with the
credentials in question, after a fresh token) and is trusted for `--access-ttl`: a rollout costs
one check per credential and repository, not one per blob. Whether a repository is public is
asked anonymously and re-learnt each TTL. While the upstream cannot be asked, a repository last
seen public stays public and a private one stays closed to everyone without a fresh verdict
(`PrivateMarks` keeps the private ones across restarts).

The swarm carries content by digest between nodes; a node pulls a blob through it only for a
request that passed here, so a peer never opens private content to another node's client.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from distributed_images.recent import Recent
from node.access.config import AccessConfig
from node.access.contents import Contents
from node.access.marks import FILE_NAME, PrivateMarks
from node.access.seeded import SeededContent
from node.access.verdicts import Verdicts
from node.errors import (
    BlobUnknown,
    CredentialsRequired,
    ManifestUnknown,
    NotFound,
    UpstreamDenied,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from node.metrics import NodeMetrics
from node.oci import mediatypes
from node.oci.descriptors import descriptors
from node.oci.reference import is_digest
from node.store.contentstore import ContentStore
from node.upstream.auth import Authenticator, pull_scope
from node.upstream.client import UpstreamClient
from node.upstream.credential import ANONYMOUS, NODE, Credential, Requester, from_authorization
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)

RETRY_AFTER = 10.0  # seconds before an upstream that could not answer is asked again
MAX_UNANSWERED = 10_000


class Outcome(enum.Enum):
    """What the upstream answered to one check."""

    ALLOWED = "allowed"  # 2xx: readable, and the object is there
    UNAUTHORIZED = "unauthorized"  # 401
    FORBIDDEN = "forbidden"  # 403
    MISSING = "missing"  # 404: says nothing about who may read the repository

    @property
    def decisive(self) -> bool:
        """A verdict on who may read the repository, worth remembering for the TTL."""
        return self is not Outcome.MISSING


def _decisive(outcome: Outcome) -> bool:
    return outcome.decisive


@dataclass(frozen=True)
class Target:
    """What a request asks of a repository: a manifest by tag or digest, or a blob."""

    kind: str  # "manifest" or "blob"
    reference: str  # a tag or a digest

    @classmethod
    def manifest(cls, reference: str) -> Target:
        return cls("manifest", reference)

    @classmethod
    def blob(cls, digest: str) -> Target:
        return cls("blob", digest)

    @property
    def is_content(self) -> bool:
        """Addressed by digest: it opens nothing unless it belongs to the repository."""
        return is_digest(self.reference)

    def unknown(self, where: str) -> NotFound:
        kind = BlobUnknown if self.kind == "blob" else ManifestUnknown
        return kind(f"{self.reference} is not known in {where}")


@dataclass(frozen=True)
class Grant:
    """May read: from `upstream`, bound to the credentials its fetches carry. `seeded`: let
    through as seeded content (the operator's), which the manifest then served opens too."""

    upstream: Upstream
    seeded: bool = False


class Access:
    def __init__(
        self,
        client: UpstreamClient,
        authenticator: Authenticator,
        metrics: NodeMetrics,
        config: AccessConfig,
        data_dir: Path | None = None,
        seeded: SeededContent | None = None,
        store: ContentStore | None = None,
    ) -> None:
        self._client = client
        self._auth = authenticator
        self._metrics = metrics
        self._seeded = seeded
        self._store = store
        self._public: Verdicts[Outcome] = Verdicts(config.access_ttl, _decisive)
        self._verdicts: Verdicts[Outcome] = Verdicts(config.access_ttl, _decisive)
        self._contents = Contents()
        # Repositories whose upstream could not say lately: asked again after `_retry_after`.
        self._unanswered: Recent[str, float] = Recent(MAX_UNANSWERED)
        self._retry_after = min(config.access_ttl, RETRY_AFTER)
        self._marks = PrivateMarks(data_dir / FILE_NAME if data_dir else None)

    async def for_request(
        self, upstream: Upstream, repo: str, authorization: str | None, target: Target
    ) -> Grant:
        """`authorize` for a client request with this Authorization header (or none)."""
        return await self.authorize(upstream, repo, from_authorization(authorization), target)

    def live(self, upstream: Upstream, authorization: str | None) -> Upstream:
        """For what the upstream answers live, with nothing cached (a tag list): the client's
        credentials if it sent some, else the node's; the upstream's answer is the check."""
        requester = from_authorization(authorization)
        return upstream.with_credential(requester) if requester else upstream

    async def authorize(
        self, upstream: Upstream, repo: str, requester: Requester | None, target: Target
    ) -> Grant:
        """How this request may read the target; raises when it may not."""
        if self._seeded_here(upstream, repo, target):
            return Grant(upstream, seeded=True)  # the upstream is not even asked: seed-first
        visibility = await self._visibility(upstream, repo, target)
        if visibility is Outcome.ALLOWED:
            bound = upstream
        else:
            try:
                bound = await self._private(upstream, repo, requester, target, visibility)
            except (CredentialsRequired, UpstreamError, NotFound):
                if await self._seeded_in_cluster(upstream, repo, target):
                    return Grant(upstream, seeded=True)
                raise
        if target.is_content:
            await self._belongs(bound, repo, target)
        return Grant(bound)

    def seen(self, grant: Grant, repo: str, digest: str, body: bytes | None) -> None:
        """A manifest was served under the repository: what it names belongs there (and is
        open to every client, if it was served as seeded content)."""
        upstream = grant.upstream
        self._contents.saw(upstream.ns, upstream.repository(repo), digest, body, grant.seeded)

    def refused(self, upstream: Upstream, repo: str) -> None:
        """The upstream refused a fetch made with these credentials: ask again next time."""
        key = (upstream.credential.key, upstream.ns, upstream.repository(repo))
        self._verdicts.forget(key)

    def _seeded_here(self, upstream: Upstream, repo: str, target: Target) -> bool:
        """A tag this node seeds, content an archive pins here, or content a seeded image
        served under this repository named."""
        if self._seeded is None:
            return False
        repository = upstream.repository(repo)
        if not target.is_content:
            return self._seeded.tag_here(upstream, repository, target.reference)
        digest = target.reference
        opened = self._contents.opened(upstream.ns, repository, digest)
        return opened or self._seeded.content(digest)

    async def _seeded_in_cluster(self, upstream: Upstream, repo: str, target: Target) -> bool:
        """A tag another node seeds (asked of the tracker only before a refusal)."""
        if self._seeded is None or target.is_content:
            return False
        return await self._seeded.tag(upstream, upstream.repository(repo), target.reference)

    async def _visibility(self, upstream: Upstream, repo: str, target: Target) -> Outcome:
        """ALLOWED for a public repository; UNAUTHORIZED or FORBIDDEN, as the upstream answered
        an anonymous request, for a private one."""
        name = f"{upstream.ns}/{upstream.repository(repo)}"
        anonymous = upstream.with_credential(ANONYMOUS)

        async def ask() -> Outcome:
            outcome = await self._check(anonymous, repo, target, "visibility")
            if outcome is Outcome.ALLOWED:
                self._marks.unmark(name)
            elif outcome.decisive:
                self._marks.mark(name)
            return outcome

        quiet_until = self._unanswered.get(name)
        if quiet_until is not None and quiet_until > time.monotonic():
            outcome = Outcome.MISSING  # asked lately in vain: not again on every request
        else:
            try:
                outcome = await self._public.get(name, ask)
            except (UpstreamUnavailable, UpstreamRateLimited) as e:
                log.info(
                    "cannot ask whether a repository is public",
                    extra={"repo": name, "error": e.message},
                )
                self._unanswered.remember(name, time.monotonic() + self._retry_after)
                outcome = Outcome.MISSING
        if outcome.decisive:
            return outcome
        last = self._public.last(name)
        if last is not None:
            return last.value
        return Outcome.UNAUTHORIZED if name in self._marks else Outcome.ALLOWED

    async def _private(
        self,
        upstream: Upstream,
        repo: str,
        requester: Requester | None,
        target: Target,
        visibility: Outcome,
    ) -> Upstream:
        name = f"{upstream.ns}/{upstream.repository(repo)}"
        credential: Credential | None = requester
        if credential is None and self._auth.has_own(upstream):
            credential = NODE
        if credential is None and visibility is Outcome.FORBIDDEN:
            self._metrics.access_refused.labels("denied").inc()
            raise UpstreamDenied(f"the upstream denies anonymous access to {name}")
        if credential is None:
            self._metrics.access_refused.labels("credentials_required").inc()
            raise CredentialsRequired(f"{name} needs credentials: log in to this node")
        bound = upstream.with_credential(credential)

        async def ask() -> Outcome:
            return await self._check(bound, repo, target, "credential")

        outcome = await self._verdicts.get((credential.key, upstream.ns, name), ask)
        if outcome is Outcome.UNAUTHORIZED:
            self._metrics.access_refused.labels("unauthorized").inc()
            raise UpstreamUnauthorized(f"the upstream does not accept these credentials for {name}")
        if outcome is Outcome.FORBIDDEN:
            self._metrics.access_refused.labels("denied").inc()
            raise UpstreamDenied(f"the upstream denies these credentials access to {name}")
        if outcome is Outcome.MISSING and target.is_content:
            # Not a verdict on the repository: a digest the upstream lacks opens nothing here.
            self._metrics.access_refused.labels("unknown").inc()
            raise target.unknown(name)
        return bound

    async def _belongs(self, bound: Upstream, repo: str, target: Target) -> None:
        repository = bound.repository(repo)
        digest = target.reference
        if self._contents.holds(bound.ns, repository, digest):
            return
        if self._seeded is not None and self._seeded.content(digest):
            return
        try:
            outcome = await self._check(bound, repo, target, "membership")
        except (UpstreamUnavailable, UpstreamRateLimited):
            if await self._stored_outside_private(bound.ns, digest):
                return  # a restarted node, its upstream down: what it holds of no private repo
            raise
        if outcome is Outcome.ALLOWED:
            return
        self._metrics.access_refused.labels("unknown").inc()
        if outcome is Outcome.UNAUTHORIZED:
            raise UpstreamUnauthorized(f"the upstream refused {digest} in {repository}")
        if outcome is Outcome.FORBIDDEN:
            raise UpstreamDenied(f"the upstream denied {digest} in {repository}")
        raise target.unknown(f"{bound.ns}/{repository}")

    async def _stored_outside_private(self, ns: str, digest: str) -> bool:
        """Held here, and fetched from no repository known to be private: a blob by the
        repository it came from, a manifest by its config's. What this node fetched of a private
        repository, it saw private (`PrivateMarks`), so it never opens that while it cannot ask."""
        if self._store is None or self._store.stat(digest) is None:
            return False
        origin = self._store.origin(digest)
        if origin is None:
            body = await self._store.content(digest)
            config = descriptors(body)[:1] if body is not None else []
            origin = self._store.origin(config[0][0]) if config else None
        if origin is None:
            return False
        registry, repository = origin
        names = {f"{registry}/{repository}", f"{registry}/library/{repository}"}
        return not any(name in self._marks for name in names)

    async def _check(self, upstream: Upstream, repo: str, target: Target, kind: str) -> Outcome:
        """One upstream request for the target with the upstream's credentials, after a fresh
        token: a token issued before a revocation must not answer for the credentials now."""
        self._auth.forget(upstream, pull_scope(upstream, repo))
        try:
            if target.kind == "blob":
                await self._client.blob_size(upstream, repo, target.reference)
            else:
                accept = list(mediatypes.MANIFEST_TYPES)
                await self._client.manifest(upstream, repo, target.reference, accept, head=True)
            outcome = Outcome.ALLOWED
        except UpstreamUnauthorized:
            outcome = Outcome.UNAUTHORIZED
        except UpstreamDenied:
            outcome = Outcome.FORBIDDEN
        except NotFound:
            outcome = Outcome.MISSING
        except (UpstreamUnavailable, UpstreamRateLimited):
            self._metrics.access_checks.labels(kind, "unavailable").inc()
            raise
        if outcome is Outcome.ALLOWED and target.is_content:
            self._contents.confirmed(upstream.ns, upstream.repository(repo), target.reference)
        self._metrics.access_checks.labels(kind, outcome.value).inc()
        log.debug(
            "access checked",
            extra={
                "registry": upstream.ns,
                "repo": repo,
                "check": kind,
                "credential": upstream.credential.kind,
                "target": target.reference,
                "result": outcome.value,
            },
        )
        return outcome
