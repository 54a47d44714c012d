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
import tempfile


def compile_protos(proto_dir, out_dir):
    from grpc_tools import protoc
    import grpc_tools

    protos = [
        os.path.relpath(os.path.join(root, name), proto_dir)
        for root, _, names in os.walk(proto_dir)
        for name in names
        if name.endswith(".proto")
    ]
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {protos}")


def main():
    proto_dir, target = sys.argv[1], sys.argv[2]
    calls = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as out_dir:
        compile_protos(proto_dir, out_dir)
        sys.path.insert(0, out_dir)
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
