"""descriptor_index (gRPC reflection's view of a FileDescriptorSet) against Python protobuf's own
reading of the same set (build/proto/descriptor_set.pb, as embedded in the server): the same
files in order with their sizes and imports, the same services, and every symbol protobuf
defines (messages, nested ones, fields, enums, enum values in their enum's scope, services,
methods) found in its file, message types marked; names that are not symbols not found. Then
every prefix of the set and every copy with one byte flipped is indexed or refused with an
error, never a crash (the ASan build runs this too).

usage: test_descriptor_index.py DUMP DESCRIPTOR_SET"""
import subprocess
import sys

from google.protobuf import descriptor_pb2

DUMP, SET = sys.argv[1:3]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL", what)


def expected_symbols(fds):
    """{full name: (file index, is_message)} from protobuf's FileDescriptorSet."""
    out = {}

    def message(m, scope, f):
        full = f"{scope}.{m.name}" if scope else m.name
        out[full] = (f, True)
        for field in m.field:
            out[f"{full}.{field.name}"] = (f, False)
        for nested in m.nested_type:
            message(nested, full, f)
        for e in m.enum_type:
            enum(e, full, f)

    def enum(e, scope, f):
        out[f"{scope}.{e.name}" if scope else e.name] = (f, False)
        for v in e.value:
            out[f"{scope}.{v.name}" if scope else v.name] = (f, False)

    for f, fd in enumerate(fds.file):
        for m in fd.message_type:
            message(m, fd.package, f)
        for e in fd.enum_type:
            enum(e, fd.package, f)
        for s in fd.service:
            name = f"{fd.package}.{s.name}"
            out[name] = (f, False)
            for m in s.method:
                out[f"{name}.{m.name}"] = (f, False)
    return out


def main():
    raw = open(SET, "rb").read()
    fds = descriptor_pb2.FileDescriptorSet.FromString(raw)
    symbols = expected_symbols(fds)
    missing = ["infernode.v1.Nope", "infernode.v1", "GenerateRequest", ".infernode.v1.GenerateRequest",
               "infernode.v1.GenerateRequest.nope", "infernode.v1.FinishReason.FINISH_REASON_STOP", ""]
    names = list(symbols) + missing
    r = subprocess.run([DUMP, SET], input="\n".join(names) + "\n", capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, f"dump: exit {r.returncode}: {r.stdout[-300:]} {r.stderr[-300:]}")
    lines = r.stdout.splitlines()
    files = [l.split() for l in lines if l.startswith("file ")]
    want_files = []
    for i, fd in enumerate(fds.file):
        want_files.append(["file", fd.name, str(len(fd.SerializeToString())), str(i)] +
                          [w for d in fd.dependency for w in ("dep", d)])
    check(files == want_files, f"files: {files} != {want_files}")
    services = [l.split()[1] for l in lines if l.startswith("service ")]
    want_services = [f"{fd.package}.{s.name}" for fd in fds.file for s in fd.service]
    check(services == want_services, f"services: {services} != {want_services}")
    got = {}
    for l in lines:
        if l.startswith("symbol "):
            _, name, f, kind = l.split(" ")
            got[name] = (int(f), kind)
    for name, (f, is_message) in symbols.items():
        check(got.get(name) == (f, "message" if is_message else "other"), f"symbol {name}: {got.get(name)} != {f}")
    for name in missing:
        check(got.get(name, (None,))[0] == -1, f"not a symbol, yet found: {name!r}: {got.get(name)}")
    check(len(symbols) > 150 and "grpc.health.v1.HealthCheckResponse.SERVING" in symbols and
          "infernode.v1.Inference.Generate" in symbols, f"the reference found only {len(symbols)} symbols")

    r = subprocess.run([DUMP, SET + ".nope"], capture_output=True, text=True)
    check(r.returncode == 2, "a missing file")
    r = subprocess.run([DUMP, "--prefixes", SET], capture_output=True, text=True, timeout=600)
    check(r.returncode == 0 and r.stdout.startswith("ok "), f"prefixes and flipped bytes: exit {r.returncode} "
          f"{r.stdout!r} {r.stderr[-2000:]}")
    counts = r.stdout.split()
    if len(counts) == 4:
        check(int(counts[3]) > len(raw), f"too few refused: {r.stdout!r}")
    print(f"descriptor_index: {len(symbols)} symbols, {len(fds.file)} files; {r.stdout.strip()}")
    print(f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
