from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Directive(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTIVE_UNSPECIFIED: _ClassVar[Directive]
    DIRECTIVE_FETCH: _ClassVar[Directive]
    DIRECTIVE_WAIT: _ClassVar[Directive]
    DIRECTIVE_SWARM: _ClassVar[Directive]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_DELIVERED: _ClassVar[TaskState]
    TASK_STATE_DONE: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
DIRECTIVE_UNSPECIFIED: Directive
DIRECTIVE_FETCH: Directive
DIRECTIVE_WAIT: Directive
DIRECTIVE_SWARM: Directive
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_DELIVERED: TaskState
TASK_STATE_DONE: TaskState
TASK_STATE_FAILED: TaskState

class NodeAddress(_message.Message):
    __slots__ = ("node_id", "registry", "peer", "zone")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    registry: str
    peer: str
    zone: str
    def __init__(self, node_id: _Optional[str] = ..., registry: _Optional[str] = ..., peer: _Optional[str] = ..., zone: _Optional[str] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("node", "instance")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    node: NodeAddress
    instance: str
    def __init__(self, node: _Optional[_Union[NodeAddress, _Mapping]] = ..., instance: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("heartbeat_interval_seconds", "node_ttl_seconds", "lease_ttl_seconds", "tracker_instance")
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRACKER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_seconds: float
    node_ttl_seconds: float
    lease_ttl_seconds: float
    tracker_instance: str
    def __init__(self, heartbeat_interval_seconds: _Optional[float] = ..., node_ttl_seconds: _Optional[float] = ..., lease_ttl_seconds: _Optional[float] = ..., tracker_instance: _Optional[str] = ...) -> None: ...

class Load(_message.Message):
    __slots__ = ("uploads", "downloads", "upload_bytes_per_second", "download_bytes_per_second", "store_bytes")
    UPLOADS_FIELD_NUMBER: _ClassVar[int]
    DOWNLOADS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    STORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    uploads: int
    downloads: int
    upload_bytes_per_second: int
    download_bytes_per_second: int
    store_bytes: int
    def __init__(self, uploads: _Optional[int] = ..., downloads: _Optional[int] = ..., upload_bytes_per_second: _Optional[int] = ..., download_bytes_per_second: _Optional[int] = ..., store_bytes: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "load")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    load: Load
    def __init__(self, node_id: _Optional[str] = ..., load: _Optional[_Union[Load, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HeldBlob(_message.Message):
    __slots__ = ("digest", "size", "chunk_count", "complete", "partial")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    chunk_count: int
    complete: _containers.RepeatedScalarFieldContainer[int]
    partial: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., complete: _Optional[_Iterable[int]] = ..., partial: _Optional[_Iterable[int]] = ...) -> None: ...

class SeededRef(_message.Message):
    __slots__ = ("ref", "digest")
    REF_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ref: str
    digest: str
    def __init__(self, ref: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class AnnounceRequest(_message.Message):
    __slots__ = ("node_id", "blobs", "refs")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    blobs: _containers.RepeatedCompositeFieldContainer[HeldBlob]
    refs: _containers.RepeatedCompositeFieldContainer[SeededRef]
    def __init__(self, node_id: _Optional[str] = ..., blobs: _Optional[_Iterable[_Union[HeldBlob, _Mapping]]] = ..., refs: _Optional[_Iterable[_Union[SeededRef, _Mapping]]] = ...) -> None: ...

class AnnounceResponse(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, refused: _Optional[_Iterable[str]] = ...) -> None: ...

class WithdrawRequest(_message.Message):
    __slots__ = ("node_id", "digests", "refs", "corrupt", "chunks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digests: _containers.RepeatedScalarFieldContainer[str]
    refs: _containers.RepeatedCompositeFieldContainer[SeededRef]
    corrupt: bool
    chunks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_id: _Optional[str] = ..., digests: _Optional[_Iterable[str]] = ..., refs: _Optional[_Iterable[_Union[SeededRef, _Mapping]]] = ..., corrupt: _Optional[bool] = ..., chunks: _Optional[_Iterable[int]] = ...) -> None: ...

class WithdrawResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Peer(_message.Message):
    __slots__ = ("node_id", "registry", "peer", "zone")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    registry: str
    peer: str
    zone: str
    def __init__(self, node_id: _Optional[str] = ..., registry: _Optional[str] = ..., peer: _Optional[str] = ..., zone: _Optional[str] = ...) -> None: ...

class ChunkPlacement(_message.Message):
    __slots__ = ("index", "directive", "metainfo", "peers", "complete", "lease_holder", "lease_seconds")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    METAINFO_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    LEASE_HOLDER_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    directive: Directive
    metainfo: bytes
    peers: _containers.RepeatedScalarFieldContainer[int]
    complete: _containers.RepeatedScalarFieldContainer[int]
    lease_holder: str
    lease_seconds: float
    def __init__(self, index: _Optional[int] = ..., directive: _Optional[_Union[Directive, str]] = ..., metainfo: _Optional[bytes] = ..., peers: _Optional[_Iterable[int]] = ..., complete: _Optional[_Iterable[int]] = ..., lease_holder: _Optional[str] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("digest", "chunk_count", "peers", "chunks")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    chunk_count: int
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkPlacement]
    def __init__(self, digest: _Optional[str] = ..., chunk_count: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[ChunkPlacement, _Mapping]]] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("node_id", "digest", "size", "chunk_count", "chunks", "max_leases", "omit_metainfo", "failed_chunks")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    MAX_LEASES_FIELD_NUMBER: _ClassVar[int]
    OMIT_METAINFO_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    size: int
    chunk_count: int
    chunks: _containers.RepeatedScalarFieldContainer[int]
    max_leases: int
    omit_metainfo: bool
    failed_chunks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., chunks: _Optional[_Iterable[int]] = ..., max_leases: _Optional[int] = ..., omit_metainfo: _Optional[bool] = ..., failed_chunks: _Optional[_Iterable[int]] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("placement",)
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    placement: Placement
    def __init__(self, placement: _Optional[_Union[Placement, _Mapping]] = ...) -> None: ...

class RenewLeaseRequest(_message.Message):
    __slots__ = ("node_id", "digest", "chunk", "progress_bytes", "fetched")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_BYTES_FIELD_NUMBER: _ClassVar[int]
    FETCHED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    chunk: int
    progress_bytes: int
    fetched: bool
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., chunk: _Optional[int] = ..., progress_bytes: _Optional[int] = ..., fetched: _Optional[bool] = ...) -> None: ...

class RenewLeaseResponse(_message.Message):
    __slots__ = ("held", "lease_seconds")
    HELD_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    held: bool
    lease_seconds: float
    def __init__(self, held: _Optional[bool] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class ReleaseLeaseRequest(_message.Message):
    __slots__ = ("node_id", "digest", "chunk", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    chunk: int
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., chunk: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseLeaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("node_id", "digest", "size", "chunk_count", "chunk", "metainfo")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    METAINFO_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    size: int
    chunk_count: int
    chunk: int
    metainfo: bytes
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., chunk: _Optional[int] = ..., metainfo: _Optional[bytes] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("node_id", "digest", "size", "chunk_count", "resume")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    digest: str
    size: int
    chunk_count: int
    resume: bool
    def __init__(self, node_id: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., resume: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("subscribed", "placement")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    subscribed: bool
    placement: Placement
    def __init__(self, subscribed: _Optional[bool] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ...) -> None: ...

class ResolveRequest(_message.Message):
    __slots__ = ("ref", "node_id")
    REF_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ref: str
    node_id: str
    def __init__(self, ref: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class Resolution(_message.Message):
    __slots__ = ("digest", "holders", "nodes", "size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    holders: int
    nodes: _containers.RepeatedCompositeFieldContainer[Peer]
    size: int
    def __init__(self, digest: _Optional[str] = ..., holders: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ..., size: _Optional[int] = ...) -> None: ...

class ResolveResponse(_message.Message):
    __slots__ = ("resolutions",)
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    resolutions: _containers.RepeatedCompositeFieldContainer[Resolution]
    def __init__(self, resolutions: _Optional[_Iterable[_Union[Resolution, _Mapping]]] = ...) -> None: ...

class PreheatRequest(_message.Message):
    __slots__ = ("image", "count", "zone", "timeout_seconds")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: str
    count: int
    zone: str
    timeout_seconds: float
    def __init__(self, image: _Optional[str] = ..., count: _Optional[int] = ..., zone: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class PreheatResponse(_message.Message):
    __slots__ = ("task_id", "targets")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    targets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_id: _Optional[str] = ..., targets: _Optional[_Iterable[str]] = ...) -> None: ...

class PreheatStatusRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TargetStatus(_message.Message):
    __slots__ = ("node_id", "state", "message")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    state: TaskState
    message: str
    def __init__(self, node_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class PreheatStatusResponse(_message.Message):
    __slots__ = ("task_id", "image", "targets", "finished")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    image: str
    targets: _containers.RepeatedCompositeFieldContainer[TargetStatus]
    finished: bool
    def __init__(self, task_id: _Optional[str] = ..., image: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[TargetStatus, _Mapping]]] = ..., finished: _Optional[bool] = ...) -> None: ...

class TasksRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class PreheatTask(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: str
    def __init__(self, image: _Optional[str] = ...) -> None: ...

class ChunksTask(_message.Message):
    __slots__ = ("digest", "size", "chunk_count", "chunks")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    chunk_count: int
    chunks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., chunks: _Optional[_Iterable[int]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "preheat", "republish", "check")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PREHEAT_FIELD_NUMBER: _ClassVar[int]
    REPUBLISH_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    preheat: PreheatTask
    republish: ChunksTask
    check: ChunksTask
    def __init__(self, task_id: _Optional[str] = ..., preheat: _Optional[_Union[PreheatTask, _Mapping]] = ..., republish: _Optional[_Union[ChunksTask, _Mapping]] = ..., check: _Optional[_Union[ChunksTask, _Mapping]] = ...) -> None: ...

class ReportTaskRequest(_message.Message):
    __slots__ = ("node_id", "task_id", "ok", "message")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    task_id: str
    ok: bool
    message: str
    def __init__(self, node_id: _Optional[str] = ..., task_id: _Optional[str] = ..., ok: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ReportTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("include_blobs", "max_blobs")
    INCLUDE_BLOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_BLOBS_FIELD_NUMBER: _ClassVar[int]
    include_blobs: bool
    max_blobs: int
    def __init__(self, include_blobs: _Optional[bool] = ..., max_blobs: _Optional[int] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "registry", "peer", "zone", "blobs", "chunks", "partial_chunks", "leases", "seconds_since_heartbeat", "seconds_since_join", "load")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_SINCE_JOIN_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    registry: str
    peer: str
    zone: str
    blobs: int
    chunks: int
    partial_chunks: int
    leases: int
    seconds_since_heartbeat: float
    seconds_since_join: float
    load: Load
    def __init__(self, node_id: _Optional[str] = ..., registry: _Optional[str] = ..., peer: _Optional[str] = ..., zone: _Optional[str] = ..., blobs: _Optional[int] = ..., chunks: _Optional[int] = ..., partial_chunks: _Optional[int] = ..., leases: _Optional[int] = ..., seconds_since_heartbeat: _Optional[float] = ..., seconds_since_join: _Optional[float] = ..., load: _Optional[_Union[Load, _Mapping]] = ...) -> None: ...

class BlobStatus(_message.Message):
    __slots__ = ("digest", "size", "chunk_count", "published", "holders", "min_swarm", "max_swarm", "leases")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SWARM_FIELD_NUMBER: _ClassVar[int]
    MAX_SWARM_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    chunk_count: int
    published: int
    holders: int
    min_swarm: int
    max_swarm: int
    leases: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., published: _Optional[int] = ..., holders: _Optional[int] = ..., min_swarm: _Optional[int] = ..., max_swarm: _Optional[int] = ..., leases: _Optional[int] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("instance", "address", "uptime_seconds")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    instance: str
    address: str
    uptime_seconds: float
    def __init__(self, instance: _Optional[str] = ..., address: _Optional[str] = ..., uptime_seconds: _Optional[float] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("tracker_instance", "uptime_seconds", "nodes", "blobs", "blobs_truncated", "blob_count", "chunk_count", "lease_count", "preheat_tasks", "replicas", "replica")
    TRACKER_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    BLOB_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    LEASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREHEAT_TASKS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    tracker_instance: str
    uptime_seconds: float
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    blobs: _containers.RepeatedCompositeFieldContainer[BlobStatus]
    blobs_truncated: bool
    blob_count: int
    chunk_count: int
    lease_count: int
    preheat_tasks: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    replica: str
    def __init__(self, tracker_instance: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ..., blobs: _Optional[_Iterable[_Union[BlobStatus, _Mapping]]] = ..., blobs_truncated: _Optional[bool] = ..., blob_count: _Optional[int] = ..., chunk_count: _Optional[int] = ..., lease_count: _Optional[int] = ..., preheat_tasks: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., replica: _Optional[str] = ...) -> None: ...
