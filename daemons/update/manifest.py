"""The payload manifest: update_engine's ``DeltaArchiveManifest`` protobuf schema.

Payloads carry their manifest as protobuf (proto2) bytes, so this module declares the
same messages, field numbers and types as update_engine's ``update_metadata.proto`` and
lets the protobuf library do the encoding; no generated code or ``protoc`` is needed, the
descriptors are built here at import time. ``REPLACE_XZ`` takes ChromeOS's later number
(8) so xz-compressed full payloads are expressible; ``MOVE`` and ``BSDIFF`` are declared
for decoding (and refused by the reader: only full payloads are shipped).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

PACKAGE = "flotilla.update.payload"

# InstallOperation.Type values.
REPLACE = 0
REPLACE_BZ = 1
MOVE = 2
BSDIFF = 3
REPLACE_XZ = 8
OPERATION_NAMES = {REPLACE: "REPLACE", REPLACE_BZ: "REPLACE_BZ", MOVE: "MOVE",
                   BSDIFF: "BSDIFF", REPLACE_XZ: "REPLACE_XZ"}

_F = descriptor_pb2.FieldDescriptorProto
# (name, number, type, label, message/enum type name, default)
_MESSAGES: dict[str, list[tuple[str, int, int, int, str, str | None]]] = {
    "Extent": [
        ("start_block", 1, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
        ("num_blocks", 2, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
    ],
    "InstallOperation": [
        ("type", 1, _F.TYPE_ENUM, _F.LABEL_REQUIRED, "InstallOperation.Type", None),
        ("data_offset", 2, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, "", None),
        ("data_length", 3, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, "", None),
        ("src_extents", 4, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Extent", None),
        ("src_length", 5, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
        ("dst_extents", 6, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Extent", None),
        ("dst_length", 7, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
        ("data_sha256_hash", 8, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, "", None),
    ],
    "Signatures": [
        ("signatures", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Signatures.Signature", None),
    ],
    "Signatures.Signature": [
        ("version", 1, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, "", None),
        ("data", 2, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, "", None),
    ],
    "InstallInfo": [
        ("size", 1, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
        ("hash", 2, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, "", None),
    ],
    "InstallProcedure": [
        ("type", 1, _F.TYPE_ENUM, _F.LABEL_OPTIONAL, "InstallProcedure.Type", None),
        ("operations", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "InstallOperation", None),
        ("old_info", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "InstallInfo", None),
        ("new_info", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "InstallInfo", None),
    ],
    "DeltaArchiveManifest": [
        ("partition_operations", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "InstallOperation", None),
        ("noop_operations", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "InstallOperation", None),
        ("block_size", 3, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, "", "4096"),
        ("signatures_offset", 4, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
        ("signatures_size", 5, _F.TYPE_UINT64, _F.LABEL_OPTIONAL, "", None),
        ("old_partition_info", 8, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "InstallInfo", None),
        ("new_partition_info", 9, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "InstallInfo", None),
        ("procedures", 10, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "InstallProcedure", None),
    ],
}
_ENUMS = {
    "InstallOperation.Type": list(OPERATION_NAMES.items()),
    "InstallProcedure.Type": [(0, "KERNEL"), (1, "PCR_POLICY")],
}


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name="flotilla_update_metadata.proto",
                                              package=PACKAGE, syntax="proto2")
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name in _MESSAGES:  # parents are listed before their nested messages
        parent, _, name = full_name.rpartition(".")
        proto = (protos[parent].nested_type.add() if parent else file.message_type.add())
        proto.name = name
        protos[full_name] = proto
    for full_name, fields in _MESSAGES.items():
        for name, number, type_, label, type_name, default in fields:
            field = protos[full_name].field.add(name=name, number=number, type=type_,
                                                label=label)
            if type_name:
                field.type_name = f".{PACKAGE}.{type_name}"
            if default is not None:
                field.default_value = default
    for full_name, values in _ENUMS.items():
        parent, _, name = full_name.rpartition(".")
        enum = protos[parent].enum_type.add(name=name)
        for number, value_name in values:
            enum.value.add(name=value_name, number=number)
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_build_file())


def _message(name: str) -> type[Message]:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


Extent = _message("Extent")
InstallOperation = _message("InstallOperation")
Signatures = _message("Signatures")
InstallInfo = _message("InstallInfo")
DeltaArchiveManifest = _message("DeltaArchiveManifest")


def decode(message_type: type[Message], data: bytes) -> Message:
    """Parse ``data`` strictly: a truncated or malformed message raises ValueError."""
    message = message_type()
    try:
        message.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"malformed {message_type.__name__}: {err}") from err
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise ValueError(f"malformed {message_type.__name__}: missing {missing}")
    return message
