"""Our copies of the standard health and reflection protos match grpcio's, message for message."""

from __future__ import annotations

from importlib import resources

import pytest
from google.protobuf import descriptor_pb2, text_format
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2


def _ours(name: str) -> descriptor_pb2.FileDescriptorProto:
    data = resources.files("layotto._proto").joinpath("descriptors.binpb").read_bytes()
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        if file.name == name:
            return file
    raise AssertionError(f"{name} is not in descriptors.binpb")


def _shape(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Only what travels on the wire: drop file name, options, comments and json names."""
    shaped = descriptor_pb2.FileDescriptorProto()
    shaped.CopyFrom(file)
    shaped.ClearField("name")
    shaped.ClearField("options")
    shaped.ClearField("source_code_info")

    def clear_json(messages: object) -> None:
        for m in messages:  # type: ignore[attr-defined]
            for f in m.field:
                f.ClearField("json_name")
            clear_json(m.nested_type)

    clear_json(shaped.message_type)
    return shaped


@pytest.mark.parametrize(
    ("ours", "theirs", "package"),
    [
        ("grpc/health/v1/health.proto", health_pb2.DESCRIPTOR, None),
        ("grpc/reflection/v1alpha/reflection.proto", reflection_pb2.DESCRIPTOR, None),
        # v1 is v1alpha under another package name.
        ("grpc/reflection/v1/reflection.proto", reflection_pb2.DESCRIPTOR, "grpc.reflection.v1"),
    ],
)
def test_standard_protos_match_grpcio(ours: str, theirs: object, package: str | None) -> None:
    reference = descriptor_pb2.FileDescriptorProto()
    theirs.CopyToProto(reference)  # type: ignore[attr-defined]
    if package is not None:
        text = text_format.MessageToString(reference).replace("grpc.reflection.v1alpha", package)
        reference = text_format.Parse(text, descriptor_pb2.FileDescriptorProto())
    assert _shape(_ours(ours)) == _shape(reference)
