"""gRPC server reflection of `infernode serve` (grpc.reflection.v1 and v1alpha), driven by a
reflection client written here on Debian's python3-grpcio and python3-protobuf (Debian has no
grpcio-reflection): the reflection stubs are compiled at test time from grpc-proto's
reflection.proto, the discovered FileDescriptorProtos go into a fresh descriptor pool, and
Generate is called through message classes made from that pool alone (no infernode stubs),
its answer compared with a call through stubs compiled from proto/infernode.proto.

Checks, for v1 and v1alpha: list_services; file_containing_symbol for the service, a method,
a message field, an enum value; file_by_filename with its imports; several requests on one
stream answered in order; error_response NOT_FOUND for unknown names and for
file_containing_extension; all_extension_numbers_of_type; UNAUTHENTICATED without the bearer
token (reflection needs it when the server has one; health does not).

usage: test_serve_reflection.py --infernode BIN --model GGUF --proto-dir DIR --grpc-proto DIR"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_util  # noqa: E402

TOKEN = "refl-s3cret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SERVICES = {"infernode.v1.Inference", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection"}
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def reflection_stubs(grpc_proto, work):
    """{version: (pb2, pb2_grpc)} compiled from grpc-proto's reflection.proto files."""
    out = {}
    for version in ("v1", "v1alpha"):
        name = f"reflection_{version}.proto"
        shutil.copy(os.path.join(grpc_proto, "grpc", "reflection", version, "reflection.proto"), os.path.join(work, name))
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{work}", f"--python_out={work}",
                        f"--grpc_python_out={work}", name], check=True)
    sys.path.insert(0, work)
    for version in ("v1", "v1alpha"):
        out[version] = (__import__(f"reflection_{version}_pb2"), __import__(f"reflection_{version}_pb2_grpc"))
    return out


class Reflection:
    """One ServerReflectionInfo stream per ask() (several requests on it in order)."""

    def __init__(self, channel, pb, pb_grpc, metadata=AUTH):
        self.pb, self.stub, self.md = pb, pb_grpc.ServerReflectionStub(channel), metadata

    def ask(self, *requests):
        return list(self.stub.ServerReflectionInfo(iter(requests), metadata=self.md, timeout=30))

    def one(self, **fields):
        responses = self.ask(self.pb.ServerReflectionRequest(**fields))
        check(len(responses) == 1, f"{fields}: {len(responses)} responses")
        return responses[0]

    def files(self, **fields):
        """{file name: FileDescriptorProto} of a file_descriptor_response."""
        r = self.one(**fields)
        check(r.WhichOneof("message_response") == "file_descriptor_response", f"{fields}: {r}")
        out = {}
        for raw in r.file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            out[fd.name] = fd
        return out

    def error(self, **fields):
        r = self.one(**fields)
        check(r.WhichOneof("message_response") == "error_response", f"{fields}: not an error: {r}")
        return r.error_response


def pool_of(files):
    """A fresh descriptor pool of the files, each added after its imports."""
    pool, added = descriptor_pool.DescriptorPool(), set()

    def add(name):
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)
    for name in files:
        add(name)
    return pool


def test_version(version, refl, channel, stubs):
    where = f"[{version}]"
    r = refl.one(list_services="")
    names = {s.name for s in r.list_services_response.service}
    check(names == SERVICES, f"{where} list_services: {sorted(names)}")
    check(r.original_request.list_services == "" and r.original_request.WhichOneof("message_request") == "list_services",
          f"{where} original_request: {r.original_request}")

    files = refl.files(file_containing_symbol="infernode.v1.Inference")
    check(set(files) == {"infernode.proto"}, f"{where} the service's file: {sorted(files)}")
    pool = pool_of(files)
    svc = pool.FindServiceByName("infernode.v1.Inference")
    methods = {m.name: m for m in svc.methods}
    check({"Generate", "GenerateStream", "Tokenize", "Detokenize", "ModelInfo", "DeleteSession"} <= set(methods),
          f"{where} methods: {sorted(methods)}")
    gen = methods["Generate"]
    check(gen.input_type.full_name == "infernode.v1.GenerateRequest" and
          gen.output_type.full_name == "infernode.v1.GenerateResponse", f"{where} Generate's types")

    # Call Generate through the discovered descriptors alone.
    factory = message_factory.MessageFactory(pool)
    req_cls, resp_cls = factory.GetPrototype(gen.input_type), factory.GetPrototype(gen.output_type)
    req = req_cls(text="def fibonacci(n):", max_new_tokens=6)
    call = channel.unary_unary("/infernode.v1.Inference/Generate", request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)
    got = call(req, metadata=AUTH, timeout=120)
    pb, pb_grpc = stubs[0], stubs[1]
    want = pb_grpc.InferenceStub(channel).Generate(pb.GenerateRequest(text="def fibonacci(n):", max_new_tokens=6),
                                                   metadata=AUTH, timeout=120)
    check(len(got.token_ids) == 6 and list(got.token_ids) == list(want.token_ids) and got.text == want.text,
          f"{where} Generate through reflection: {list(got.token_ids)} {got.text!r} vs {list(want.token_ids)}")

    for symbol in ("infernode.v1.Inference.Generate", "infernode.v1.GenerateRequest.text",
                   "infernode.v1.FINISH_REASON_STOP", "infernode.v1.SamplingParams"):
        check(set(refl.files(file_containing_symbol=symbol)) == {"infernode.proto"}, f"{where} symbol {symbol}")
    health = refl.files(file_by_filename="grpc/health/v1/health.proto")
    check(set(health) == {"grpc/health/v1/health.proto"} and
          health["grpc/health/v1/health.proto"].package == "grpc.health.v1", f"{where} health.proto: {sorted(health)}")
    check(set(refl.files(file_containing_symbol="grpc.health.v1.HealthCheckResponse.ServingStatus")) ==
          {"grpc/health/v1/health.proto"}, f"{where} a nested enum")

    # Several requests on one stream: one response each, in order.
    p = refl.pb.ServerReflectionRequest
    rs = refl.ask(p(list_services=""), p(file_by_filename="infernode.proto"), p(file_containing_symbol="nope.Nope"),
                  p(host="h1", list_services=""))
    kinds = [x.WhichOneof("message_response") for x in rs]
    check(kinds == ["list_services_response", "file_descriptor_response", "error_response", "list_services_response"],
          f"{where} one stream: {kinds}")
    check(len(rs) == 4 and rs[3].valid_host == "h1", f"{where} valid_host")

    for fields in ({"file_containing_symbol": "infernode.v1.Nope"}, {"file_by_filename": "nope.proto"},
                   {"all_extension_numbers_of_type": "infernode.v1.Nope"},
                   {"file_containing_extension": refl.pb.ExtensionRequest(containing_type="infernode.v1.GenerateRequest",
                                                                          extension_number=100)}):
        err = refl.error(**fields)
        check(err.error_code == grpc.StatusCode.NOT_FOUND.value[0] and err.error_message, f"{where} {fields}: {err}")
    r = refl.one(all_extension_numbers_of_type="infernode.v1.GenerateRequest")
    check(r.WhichOneof("message_response") == "all_extension_numbers_response" and
          r.all_extension_numbers_response.base_type_name == "infernode.v1.GenerateRequest" and
          not r.all_extension_numbers_response.extension_number, f"{where} all_extension_numbers_of_type: {r}")
    check(refl.error().error_code == grpc.StatusCode.UNIMPLEMENTED.value[0], f"{where} an empty request")

    try:
        Reflection(channel, refl.pb, refl.stub_module, metadata=()).ask(refl.pb.ServerReflectionRequest(list_services=""))
        check(False, f"{where} reflection without the token was answered")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.UNAUTHENTICATED, f"{where} without the token: {e.code()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ifn_refl_")
    token_file = os.path.join(work, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN)
    stubs = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    refl_stubs = reflection_stubs(a.grpc_proto, work)
    server = serve_util.Server(a.infernode, a.model, 1, ["--auth-token-file", token_file])
    try:
        with grpc.insecure_channel(server.addr) as channel:
            for version, (pb, pb_grpc) in refl_stubs.items():
                refl = Reflection(channel, pb, pb_grpc)
                refl.stub_module = pb_grpc
                test_version(version, refl, channel, stubs)
    finally:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.wait_exit(60)
        shutil.rmtree(work, ignore_errors=True)
    check("Sanitizer" not in server.log(), f"the server's log: {server.log()[-2000:]}")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("reflection: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
