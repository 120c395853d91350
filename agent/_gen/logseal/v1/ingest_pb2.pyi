from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchHeader(_message.Message):
    __slots__ = ("version", "node_id", "stream_id", "seq", "prev_hash", "key_id", "event_count", "first_event_time_ns", "last_event_time_ns", "payload_sha256", "uncompressed_length", "key_epoch", "boot_id", "boot_counter", "next_key")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_EVENT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    UNCOMPRESSED_LENGTH_FIELD_NUMBER: _ClassVar[int]
    KEY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BOOT_ID_FIELD_NUMBER: _ClassVar[int]
    BOOT_COUNTER_FIELD_NUMBER: _ClassVar[int]
    NEXT_KEY_FIELD_NUMBER: _ClassVar[int]
    version: int
    node_id: str
    stream_id: str
    seq: int
    prev_hash: bytes
    key_id: str
    event_count: int
    first_event_time_ns: int
    last_event_time_ns: int
    payload_sha256: bytes
    uncompressed_length: int
    key_epoch: int
    boot_id: bytes
    boot_counter: int
    next_key: bytes
    def __init__(self, version: _Optional[int] = ..., node_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., prev_hash: _Optional[bytes] = ..., key_id: _Optional[str] = ..., event_count: _Optional[int] = ..., first_event_time_ns: _Optional[int] = ..., last_event_time_ns: _Optional[int] = ..., payload_sha256: _Optional[bytes] = ..., uncompressed_length: _Optional[int] = ..., key_epoch: _Optional[int] = ..., boot_id: _Optional[bytes] = ..., boot_counter: _Optional[int] = ..., next_key: _Optional[bytes] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("header", "payload", "signature", "payload_dropped")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_DROPPED_FIELD_NUMBER: _ClassVar[int]
    header: BatchHeader
    payload: bytes
    signature: bytes
    payload_dropped: bool
    def __init__(self, header: _Optional[_Union[BatchHeader, _Mapping]] = ..., payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., payload_dropped: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("stream_id", "seq", "status", "reason", "verdict", "leaf_index", "checkpoint")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[Ack.Status]
        STORED: _ClassVar[Ack.Status]
        DUPLICATE: _ClassVar[Ack.Status]
        REJECTED: _ClassVar[Ack.Status]
    STATUS_UNSPECIFIED: Ack.Status
    STORED: Ack.Status
    DUPLICATE: Ack.Status
    REJECTED: Ack.Status
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    seq: int
    status: Ack.Status
    reason: str
    verdict: str
    leaf_index: int
    checkpoint: str
    def __init__(self, stream_id: _Optional[str] = ..., seq: _Optional[int] = ..., status: _Optional[_Union[Ack.Status, str]] = ..., reason: _Optional[str] = ..., verdict: _Optional[str] = ..., leaf_index: _Optional[int] = ..., checkpoint: _Optional[str] = ...) -> None: ...

class ConsistencyRequest(_message.Message):
    __slots__ = ("old_size", "new_size")
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    old_size: int
    new_size: int
    def __init__(self, old_size: _Optional[int] = ..., new_size: _Optional[int] = ...) -> None: ...

class ConsistencyProof(_message.Message):
    __slots__ = ("hashes",)
    HASHES_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...
