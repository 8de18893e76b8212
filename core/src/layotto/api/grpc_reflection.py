"""gRPC server reflection (v1 and v1alpha) over our committed FileDescriptorSet.

The descriptor set is parsed on the first reflection request, not at startup: the protobuf
runtime it needs costs ~100 ms to import, and most sidecars never see a reflection call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from functools import cached_property
from importlib import resources
from typing import Any

from grpclib.const import Status

from layotto._proto.grpc.reflection import v1 as v1_pb
from layotto._proto.grpc.reflection import v1alpha as v1alpha_pb

DESCRIPTOR_RESOURCE = ("layotto._proto", "descriptors.binpb")


class DescriptorIndex:
    """File descriptors by file name and by the symbols they define."""

    @cached_property
    def _files(self) -> dict[str, Any]:
        from google.protobuf import descriptor_pb2

        package, name = DESCRIPTOR_RESOURCE
        data = resources.files(package).joinpath(name).read_bytes()
        return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(data).file}

    @cached_property
    def _symbols(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for file in self._files.values():
            prefix = f"{file.package}." if file.package else ""

            def add_messages(messages: Iterable[Any], scope: str, fname: str = file.name) -> None:
                for m in messages:
                    index[scope + m.name] = fname
                    add_messages(m.nested_type, f"{scope}{m.name}.", fname)
                    for e in m.enum_type:
                        index[f"{scope}{m.name}.{e.name}"] = fname

            add_messages(file.message_type, prefix)
            for e in file.enum_type:
                index[prefix + e.name] = file.name
            for s in file.service:
                index[prefix + s.name] = file.name
                for method in s.method:
                    index[f"{prefix}{s.name}.{method.name}"] = file.name
        return index

    def file_with_imports(self, name: str) -> list[bytes] | None:
        """The file first, then every file it imports, transitively, each once."""
        if name not in self._files:
            return None
        ordered: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop(0)
            if current in ordered or current not in self._files:
                continue
            ordered.append(current)
            pending.extend(self._files[current].dependency)
        return [self._files[n].SerializeToString() for n in ordered]

    def file_of_symbol(self, symbol: str) -> str | None:
        return self._symbols.get(symbol)


def _make_service(pb: Any) -> type:
    class ReflectionService(pb.ServerReflectionBase):  # type: ignore[misc]
        def __init__(self, service_names: Iterable[str], index: DescriptorIndex) -> None:
            self._names = sorted(service_names)
            self._index = index

        async def server_reflection_info(self, messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in messages:
                yield self._answer(request)

        def _answer(self, request: Any) -> Any:
            response = pb.ServerReflectionResponse(
                valid_host=request.host, original_request=request
            )
            if request.list_services is not None:
                response.list_services_response = pb.ListServiceResponse(
                    service=[pb.ServiceResponse(name=n) for n in self._names]
                )
                return response
            files: list[bytes] | None = None
            if request.file_by_filename is not None:
                files = self._index.file_with_imports(request.file_by_filename)
            elif request.file_containing_symbol is not None:
                fname = self._index.file_of_symbol(request.file_containing_symbol)
                files = None if fname is None else self._index.file_with_imports(fname)
            elif request.all_extension_numbers_of_type is not None:
                # Our schemas declare no extensions.
                response.all_extension_numbers_response = pb.ExtensionNumberResponse(
                    base_type_name=request.all_extension_numbers_of_type
                )
                return response
            if files is None:
                response.error_response = pb.ErrorResponse(
                    error_code=Status.NOT_FOUND.value, error_message="not found"
                )
            else:
                response.file_descriptor_response = pb.FileDescriptorResponse(
                    file_descriptor_proto=files
                )
            return response

    return ReflectionService


ReflectionV1 = _make_service(v1_pb)
ReflectionV1Alpha = _make_service(v1alpha_pb)
