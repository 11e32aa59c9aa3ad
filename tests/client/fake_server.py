"""A fake infernode server in Python grpcio for testing `infernode client`.

It compiles proto/infernode.proto and grpc/health/v1/health.proto with grpc_tools.protoc into
a temporary folder, serves Inference and Health on 127.0.0.1 with canned answers that echo
what they received, and records every request with its metadata so that a test can check
exactly what the client sent. Special prompts and ids drive the error paths:

  Generate        "echo:" + the prompt (ids joined by spaces, fim as PREFIX[middle]SUFFIX);
                  text "slow": answers after 3 s (for --timeout)
  GenerateStream  "echo:", the prompt, "!" as three messages, the last with finish_reason,
                  usage and timings; text "wait" holds the last message until
                  release_stream is set; text "fail midway": two messages, then
                  RESOURCE_EXHAUSTED
  Tokenize        [1 if add_special] + the code points of the text
  Detokenize      the characters of the ids; INVALID_ARGUMENT for an id >= VOCAB
  ModelInfo       canned fields (path left unset)
  Health.Check    "" and infernode.v1.Inference: SERVING; "down": NOT_SERVING; else NOT_FOUND
  DeleteSession   OK; session "gone": NOT_FOUND
Generate and GenerateStream answer new_session with session_id "fake-session-1" (on every
message), and a session_id with itself.
"""
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from grpc_stubs import compile_stubs  # noqa: E402

VOCAB = 1000
MODEL_INFO = dict(architecture="llama", format="gguf", n_layers=2, dim=64, n_heads=8, n_kv_heads=4, head_dim=8,
                  ffn_dim=172, vocab_size=VOCAB, context_length=2048, server_ctx_size=512,
                  quantization="f16 -> f16", ranks=2, weight_bytes=1 << 40, kv_eviction="shift-rope")


class FakeServer:
    def __init__(self, proto_dir, grpc_proto_dir, tls_cert=None):
        self.tmp = tempfile.mkdtemp(prefix="infernode-fake-")
        self.pb, pb_grpc, self.hpb, hpb_grpc = compile_stubs(self.tmp, grpc_proto_dir, proto_dir)
        self.calls = []  # (method, request, {metadata key: value})
        self.lock = threading.Lock()
        self.release_stream = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_InferenceServicer_to_server(self._inference(pb_grpc.InferenceServicer), self.server)
        hpb_grpc.add_HealthServicer_to_server(self._health(hpb_grpc.HealthServicer), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.tls_port = None
        if tls_cert:
            cert, key = (open(p, "rb").read() for p in tls_cert)
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.tls_port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    def stop(self):
        self.server.stop(grace=None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def take_calls(self):
        with self.lock:
            calls, self.calls = self.calls, []
        return calls

    def _record(self, method, request, context):
        with self.lock:
            self.calls.append((method, request, dict(context.invocation_metadata())))

    def _inference(self, base):
        fake, pb = self, self.pb

        def prompt_of(req):
            if req.HasField("token_ids"):
                return " ".join(str(i) for i in req.token_ids.ids)
            if req.HasField("fim"):
                return req.fim.prefix + "[middle]" + req.fim.suffix
            return req.text

        def session_of(req):
            return "fake-session-1" if req.new_session else (req.session_id or None)

        def usage(req):
            return pb.Usage(prompt_tokens=len(prompt_of(req)), completion_tokens=req.max_new_tokens)

        class Inference(base):
            def Generate(self, req, context):
                fake._record("Generate", req, context)
                if req.text == "slow":
                    time.sleep(3)
                return pb.GenerateResponse(
                    text="echo:" + prompt_of(req), token_ids=[len(prompt_of(req)), req.max_new_tokens],
                    finish_reason=pb.FINISH_REASON_LENGTH, usage=usage(req), session_id=session_of(req),
                    timings=pb.Timings(queue_seconds=0.001, time_to_first_token_seconds=0.25,
                                       time_per_output_token_seconds=0.0125))

            def GenerateStream(self, req, context):
                fake._record("GenerateStream", req, context)
                yield pb.GenerateResponse(text="echo:", token_ids=[1], session_id=session_of(req))
                yield pb.GenerateResponse(text=prompt_of(req), token_ids=[2], session_id=session_of(req))
                if req.text == "fail midway":
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "the KV cache is full")
                if req.text == "wait":
                    fake.release_stream.wait(timeout=10)
                yield pb.GenerateResponse(text="!", token_ids=[3], finish_reason=pb.FINISH_REASON_STOP,
                                          session_id=session_of(req),
                                          usage=usage(req), timings=pb.Timings(time_to_first_token_seconds=0.5))

            def Tokenize(self, req, context):
                fake._record("Tokenize", req, context)
                return pb.TokenizeResponse(token_ids=([1] if req.add_special else []) + [ord(c) for c in req.text])

            def Detokenize(self, req, context):
                fake._record("Detokenize", req, context)
                for i, t in enumerate(req.token_ids):
                    if t >= VOCAB:
                        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                      f"token_ids[{i}]: {t} is outside the vocabulary (0..{VOCAB - 1})")
                return pb.DetokenizeResponse(text="".join(chr(t) for t in req.token_ids))

            def ModelInfo(self, req, context):
                fake._record("ModelInfo", req, context)
                return pb.ModelInfoResponse(**MODEL_INFO)

            def DeleteSession(self, req, context):
                fake._record("DeleteSession", req, context)
                if req.session_id == "gone":
                    context.abort(grpc.StatusCode.NOT_FOUND, "unknown session gone")
                return pb.DeleteSessionResponse()

        return Inference()

    def _health(self, base):
        fake, hpb = self, self.hpb

        class Health(base):
            def Check(self, req, context):
                fake._record("Check", req, context)
                status = hpb.HealthCheckResponse
                if req.service in ("", "infernode.v1.Inference"):
                    return status(status=status.SERVING)
                if req.service == "down":
                    return status(status=status.NOT_SERVING)
                context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {req.service}")

        return Health()
