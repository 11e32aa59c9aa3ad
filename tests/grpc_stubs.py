"""Python gRPC stubs compiled at test time with grpc_tools from the project's
proto/infernode.proto and grpc-proto's grpc/health/v1/health.proto, so that no test client or
fake server shares code with infernode's C server and client."""
import importlib
import os
import shutil
import subprocess
import sys


def compile_stubs(out_dir, grpc_proto_dir, proto_dir=None):
    """(infernode_pb2, infernode_pb2_grpc, health_pb2, health_pb2_grpc), importable from out_dir;
    the first two are None without proto_dir. health.proto is copied to the top of out_dir so
    that its modules do not land under a `grpc` package that would hide grpcio's (the proto
    package stays grpc.health.v1)."""
    files = ["health.proto"]
    shutil.copy(os.path.join(grpc_proto_dir, "grpc", "health", "v1", "health.proto"), out_dir)
    if proto_dir:
        shutil.copy(os.path.join(proto_dir, "infernode.proto"), out_dir)
        files.append("infernode.proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{out_dir}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}"] + files, check=True)
    sys.path.insert(0, out_dir)
    pb = (importlib.import_module("infernode_pb2"), importlib.import_module("infernode_pb2_grpc")) if proto_dir \
        else (None, None)
    return pb + (importlib.import_module("health_pb2"), importlib.import_module("health_pb2_grpc"))
