#!/usr/bin/python3
"""10,000 short requests in a row against `mpirun -np 2 infernode serve`: the resident memory
of every rank after the first hundred does not grow by the end (allocator noise allowed:
1 MiB). usage: test_serve_memory.py --infernode BIN --model GGUF --proto-dir DIR --grpc-proto DIR"""
import argparse
import concurrent.futures as cf
import os
import signal
import sys

import grpc

import serve_util

N_REQUESTS, WARMUP, SLACK_KIB = 10000, 100, 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--grpc-proto", required=True)
    a = ap.parse_args()
    pb, pb_grpc, _, _ = serve_util.load_stubs(a.proto_dir, a.grpc_proto)
    server = serve_util.Server(a.infernode, a.model, 2, ["--max-seqs", "4"])
    failures = []
    try:
        pids = serve_util.rank_pids(server.proc.pid, 2)
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(server.addr))

        def one(i):
            req = pb.GenerateRequest(max_new_tokens=2, ignore_eos=True)
            if i % 2:
                req.text = f"x = {i}"
            else:
                req.token_ids.ids.extend([1, 100 + i % 50])
            if i % 3 == 0:
                req.sampling.temperature = 0.8
                req.sampling.seed = i
            return len(stub.Generate(req, timeout=60).token_ids)

        with cf.ThreadPoolExecutor(4) as ex:
            assert all(n == 2 for n in ex.map(one, range(WARMUP)))
            base = {r: serve_util.rss_kib(p) for r, p in pids.items()}
            done = sum(n == 2 for n in ex.map(one, range(WARMUP, N_REQUESTS)))
        end = {r: serve_util.rss_kib(p) for r, p in pids.items()}
        if done != N_REQUESTS - WARMUP:
            failures.append(f"{N_REQUESTS - WARMUP - done} requests did not generate 2 tokens")
        for r in sorted(pids):
            grew = end[r] - base[r]
            print(f"rank {r}: resident {base[r]} KiB after {WARMUP} requests, {end[r]} KiB after {N_REQUESTS} "
                  f"({grew:+d} KiB)")
            if grew > SLACK_KIB:
                failures.append(f"rank {r} grew by {grew} KiB over {N_REQUESTS - WARMUP} requests")
        os.kill(pids[0], signal.SIGTERM)
        if server.wait_exit(60) != 0:
            failures.append("no clean exit after SIGTERM:\n" + server.log())
    finally:
        server.kill()
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
