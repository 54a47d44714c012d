"""Test-only: a real gRPC client (grpcio) calling Envoy's
envoy.service.auth.v3.Authorization/Check.

Usage: check.py PROTO_DIR HOST:PORT < calls.json

The protos under PROTO_DIR are compiled with grpc_tools.protoc into a
temporary directory first. stdin is a JSON list of calls, each
{"metadata": [[key, value], ...], "request": <CheckRequest as JSON>,
"method": <optional: another method path to call with it>};
stdout is a JSON list with, for each call, the CheckResponse as JSON
(proto field names, enums as numbers) or {"rpc_error": <status code name>}.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import grpc_stubs  # noqa: E402


def main():
    proto_dir, target = sys.argv[1], sys.argv[2]
    calls = json.load(sys.stdin)
    with grpc_stubs.importable(proto_dir):
        import grpc
        from google.protobuf import json_format
        from envoy.service.auth.v3 import external_auth_pb2 as pb
        from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc

        results = []
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.AuthorizationStub(channel)
            for call in calls:
                request = json_format.ParseDict(call["request"], pb.CheckRequest())
                metadata = [tuple(pair) for pair in call.get("metadata", [])]
                method = stub.Check
                if "method" in call:
                    method = channel.unary_unary(
                        call["method"],
                        request_serializer=pb.CheckRequest.SerializeToString,
                        response_deserializer=pb.CheckResponse.FromString,
                    )
                try:
                    response = method(request, metadata=metadata, timeout=20)
                except grpc.RpcError as error:
                    results.append({"rpc_error": error.code().name})
                    continue
                results.append(
                    json_format.MessageToDict(
                        response,
                        preserving_proto_field_name=True,
                        use_integers_for_enums=True,
                    )
                )
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
