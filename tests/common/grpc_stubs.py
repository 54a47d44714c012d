"""Test-only helpers of the grpcio programs the tests run: the Python
modules of the protos under a directory, compiled with grpcio-tools into a
temporary directory at test time (no generated code is kept in the
repository), and events reported as JSON lines."""

import json
import os
import sys
import tempfile
import threading

_print_lock = threading.Lock()


def report(**event):
    """One JSON line on stdout, whole even when threads report at once."""
    with _print_lock:
        print(json.dumps(event), flush=True)


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


def importable(proto_dir):
    """Compiles the protos under proto_dir and puts them on sys.path; the
    returned directory must be kept until the process ends."""
    out_dir = tempfile.TemporaryDirectory()
    compile_protos(proto_dir, out_dir.name)
    sys.path.insert(0, out_dir.name)
    return out_dir
