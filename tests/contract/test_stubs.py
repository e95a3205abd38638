"""The protobuf contract (protos/) and its committed generated code (vault_service/_proto/ and
every client's copy).

* Every committed target of scripts/gen-proto is exactly what it generates from protos/ now
  (drift test).
* The service has the three RPCs with the right types and streaming flags.
* The contract keeps its conventions: prefixed enums with an ``_UNSPECIFIED`` zero value,
  timestamps as ``google.protobuf.Timestamp``, and a comment on every element (the same rule as
  buf's COMMENTS category, so it holds even where the buf CLI is not installed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import descriptor, descriptor_pb2

from vault_service._proto.vault.v1 import vault_service_pb2 as pb
from vault_service._proto.vault.v1 import vault_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
PROTO = "vault/v1/vault_service.proto"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def _gen_env() -> dict[str, str]:
    # The interpreter running the tests has the pinned generators (grpcio-tools, mypy-protobuf).
    return {**os.environ, "GEN_PROTO_PYTHON": sys.executable}


def _targets() -> list[str]:
    listed = subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), "--list-targets"],
        check=True,
        env=_gen_env(),
        capture_output=True,
        text=True,
    )
    return listed.stdout.split()


def test_gen_proto_covers_the_service_and_the_python_client() -> None:
    assert {"vault_service/_proto", "clients/python/src/vault_client/_proto"} <= set(_targets())


def test_committed_stubs_are_exactly_what_gen_proto_generates(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen-proto"), "--out", str(tmp_path)],
        check=True,
        env=_gen_env(),
        capture_output=True,
    )

    for target in _targets():
        committed, regenerated = _tree(ROOT / target), _tree(tmp_path / target)
        assert sorted(committed) == sorted(regenerated), f"run scripts/gen-proto: {target} differs"
        stale = [name for name in committed if committed[name] != regenerated[name]]
        assert not stale, f"run scripts/gen-proto: {target}: {stale} differ from protos/"


def test_stubs_import_under_their_package_and_keep_the_proto_file_name() -> None:
    # protoc's `from vault.v1 import ...` was rewritten; the descriptor keeps the proto path,
    # which is what gRPC reflection serves to grpcurl and other clients.
    assert pb.DESCRIPTOR.name == PROTO
    assert pb.DESCRIPTOR.package == "vault.v1"
    assert pb.CreateSessionRequest.__module__ == "vault_service._proto.vault.v1.vault_service_pb2"
    assert getattr(pb_grpc, "vault_dot_v1_dot_vault__service__pb2") is pb  # noqa: B009


@pytest.mark.parametrize(
    ("name", "request_type", "response_type", "server_streaming"),
    [
        ("CreateSession", "CreateSessionRequest", "CreateSessionResponse", False),
        ("GetResult", "GetResultRequest", "GetResultResponse", False),
        ("StreamResults", "StreamResultsRequest", "StreamResultsResponse", True),
        ("ListResults", "ListResultsRequest", "ListResultsResponse", False),
    ],
)
def test_service_has_the_rpc(
    name: str, request_type: str, response_type: str, server_streaming: bool
) -> None:
    method = pb.DESCRIPTOR.services_by_name["VaultService"].methods_by_name[name]

    assert method.full_name == f"vault.v1.VaultService.{name}"
    assert method.input_type.full_name == f"vault.v1.{request_type}"
    assert method.output_type.full_name == f"vault.v1.{response_type}"
    assert method.client_streaming is False
    assert method.server_streaming is server_streaming


def test_service_has_exactly_its_four_rpcs() -> None:
    service = pb.DESCRIPTOR.services_by_name["VaultService"]
    assert [m.name for m in service.methods] == [
        "CreateSession",
        "GetResult",
        "StreamResults",
        "ListResults",
    ]
    assert list(pb.DESCRIPTOR.services_by_name) == ["VaultService"]


def _enums(file: descriptor.FileDescriptor) -> Iterator[descriptor.EnumDescriptor]:
    def nested(message: descriptor.Descriptor) -> Iterator[descriptor.EnumDescriptor]:
        yield from message.enum_types
        for inner in message.nested_types:
            yield from nested(inner)

    yield from file.enum_types_by_name.values()
    for message in file.message_types_by_name.values():
        yield from nested(message)


def _upper_snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def test_every_enum_has_an_unspecified_zero_value_and_prefixed_values() -> None:
    enums = list(_enums(pb.DESCRIPTOR))
    assert {e.name for e in enums} >= {"VaultingStatus", "EventSource", "TerminalType", "OsType"}
    for enum in enums:
        prefix = _upper_snake(enum.name) + "_"
        zero = enum.values_by_number[0]
        assert zero.name == f"{prefix}UNSPECIFIED", enum.full_name
        assert enum.values[0] is zero, f"{enum.full_name}: the zero value comes first"
        for value in enum.values:
            assert value.name.startswith(prefix), value.name


def test_vaulting_status_values() -> None:
    assert [v.name for v in pb.VaultingStatus.DESCRIPTOR.values] == [
        "VAULTING_STATUS_UNSPECIFIED",
        "VAULTING_STATUS_SESSION_CREATED",
        "VAULTING_STATUS_PROCESSING",
        "VAULTING_STATUS_SUCCEEDED",
        "VAULTING_STATUS_FAILED",
        "VAULTING_STATUS_EXPIRED",
    ]


def _messages(file: descriptor.FileDescriptor) -> Iterator[descriptor.Descriptor]:
    def walk(message: descriptor.Descriptor) -> Iterator[descriptor.Descriptor]:
        yield message
        for inner in message.nested_types:
            yield from walk(inner)

    for message in file.message_types_by_name.values():
        yield from walk(message)


def test_times_are_timestamps() -> None:
    for message in _messages(pb.DESCRIPTOR):
        for field in message.fields:
            if field.name.endswith("_time"):
                assert field.message_type is not None, field.full_name
                assert field.message_type.full_name == "google.protobuf.Timestamp", field.full_name


def test_presence_where_unset_differs_from_zero() -> None:
    request = pb.CreateSessionRequest()
    assert not request.HasField("is_3ds_authentication")
    request.is_3ds_authentication = False
    assert request.HasField("is_3ds_authentication")

    env = pb.Env()
    assert not env.HasField("time_zone_offset")
    env.time_zone_offset = 0
    assert env.HasField("time_zone_offset")


def test_stream_response_is_an_event_a_checkpoint_or_an_unreadable_event() -> None:
    oneof = pb.StreamResultsResponse.DESCRIPTOR.oneofs_by_name["kind"]
    assert [f.name for f in oneof.fields] == ["event", "checkpoint", "unreadable_event"]
    message = pb.StreamResultsResponse(checkpoint=pb.Checkpoint(resume_token="t"))
    assert message.WhichOneof("kind") == "checkpoint"


def test_create_session_request_has_no_notification_url() -> None:
    # The service always gives Antom its own webhook URL.
    names = {f.name for f in pb.CreateSessionRequest.DESCRIPTOR.fields}
    assert not {n for n in names if "notif" in n or "webhook" in n}


def _source_info(tmp_path: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "descriptor.binpb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={ROOT / 'protos'}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            str(ROOT / "protos" / PROTO),
        ],
        check=True,
        capture_output=True,
    )
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    (file,) = (f for f in files if f.name == PROTO)
    return file


def test_every_element_is_documented(tmp_path: Path) -> None:
    file = _source_info(tmp_path)
    comments = {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
    }
    missing: list[str] = []

    def need(path: tuple[int, ...], name: str) -> None:
        if not comments.get(path):
            missing.append(name)

    # Field numbers of the descriptor messages (descriptor.proto) used in source-code paths.
    file_message, file_enum, file_service = 4, 5, 6
    message_field, message_nested, message_enum, message_oneof = 2, 3, 4, 8
    enum_value, service_method = 2, 2

    def enum(path: tuple[int, ...], proto: descriptor_pb2.EnumDescriptorProto) -> None:
        need(path, proto.name)
        for i, value in enumerate(proto.value):
            need((*path, enum_value, i), value.name)

    def message(path: tuple[int, ...], proto: descriptor_pb2.DescriptorProto) -> None:
        if proto.options.map_entry:
            return  # synthesized by protoc for map fields
        need(path, proto.name)
        for i, field in enumerate(proto.field):
            need((*path, message_field, i), f"{proto.name}.{field.name}")
        for i, oneof in enumerate(proto.oneof_decl):
            if not oneof.name.startswith("_"):  # synthetic oneofs of proto3 `optional`
                need((*path, message_oneof, i), f"{proto.name}.{oneof.name}")
        for i, nested in enumerate(proto.nested_type):
            message((*path, message_nested, i), nested)
        for i, nested_enum in enumerate(proto.enum_type):
            enum((*path, message_enum, i), nested_enum)

    for i, message_proto in enumerate(file.message_type):
        message((file_message, i), message_proto)
    for i, enum_proto in enumerate(file.enum_type):
        enum((file_enum, i), enum_proto)
    for i, service in enumerate(file.service):
        need((file_service, i), service.name)
        for j, method in enumerate(service.method):
            need((file_service, i, service_method, j), f"{service.name}.{method.name}")

    assert not missing, f"undocumented: {missing}"
