"""infernode quantize keeps the tokenizer.

1. A Hugging Face directory with a real tokenizer (llama.cpp's llama-spm, gpt-2 and starcoder
   vocabularies, converted to tokenizer.json as Hugging Face lays them out by
   tests/tokenizer/gguf_to_tokenizer_json.py, beside a small random Llama model of that
   vocabulary size): the quantized GGUF carries tokenizer.ggml.* keys, and the tokenizer read
   back from it gives the published test vectors' ids exactly (test_tokenizer_vectors on the
   output file); generate takes a text prompt on it.
2. A GGUF input: the output's tokenizer.ggml.* keys are the input's, value for value.
3. A Hugging Face directory without tokenizer.json: stderr says the output has no tokenizer,
   and the file is still written.

  test_quantize_tokenizer.py --infernode BIN --vectors test_tokenizer_vectors --vocab-dir DIR
                             --model MODEL.gguf --work DIR
Exits 77 (skip) when the shared vocabularies are absent, and fails then under CI=true.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, os.path.join(HERE, "..", "tokenizer"))
from llama_model import LlamaConfig, random_model  # noqa: E402
import safetensors_write  # noqa: E402
import readback  # noqa: E402
import gguf_to_tokenizer_json as tokjson  # noqa: E402

VOCABS = ["ggml-vocab-llama-spm", "ggml-vocab-gpt-2", "ggml-vocab-starcoder"]
ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def hf_dir(path, n_vocab, tokenizer=None):
    """A one-layer random Llama of n_vocab tokens as a Hugging Face directory, with tokenizer
    (tokenizer.json, tokenizer_config.json) if given."""
    shutil.rmtree(path, ignore_errors=True)
    cfg = LlamaConfig(dim=32, hidden_dim=64, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=n_vocab,
                      context_length=64)
    safetensors_write.write_hf(path, cfg, random_model(cfg, 7))
    if tokenizer:
        tj, config = tokenizer
        tokjson.write_json(os.path.join(path, "tokenizer.json"), tj)
        tokjson.write_json(os.path.join(path, "tokenizer_config.json"), config)


def tokenizer_keys(path):
    _, md, _ = readback.read_gguf(path)
    return {k: v for k, v in md.items() if k.startswith("tokenizer.")}


def test_hf(a, name):
    meta = tokjson.read_gguf_metadata(os.path.join(a.vocab_dir, name + ".gguf"))
    src = os.path.join(a.work, name)
    hf_dir(src, len(meta["tokenizer.ggml.tokens"]), tokjson.convert(meta))
    out = os.path.join(a.work, name + "-w8.gguf")
    r = run([a.infernode, "quantize", "-m", src, "-o", out, "--scheme", "rtn-w8"])
    check(r.returncode == 0 and "warning" not in r.stderr, f"{name}: quantize from the HF directory, no warning"
          + ("" if r.returncode == 0 else ": " + r.stderr[-400:]))
    if r.returncode != 0:
        return
    keys = tokenizer_keys(out)
    want_model = meta["tokenizer.ggml.model"]
    check(keys.get("tokenizer.ggml.model") == want_model and len(keys.get("tokenizer.ggml.tokens", []))
          == len(meta["tokenizer.ggml.tokens"]), f"{name}: the output has a {want_model} tokenizer of "
          f"{len(meta['tokenizer.ggml.tokens'])} tokens")
    check(keys.get("tokenizer.ggml.tokens") == meta["tokenizer.ggml.tokens"],
          f"{name}: the output's tokens are the vocabulary's, in order")
    for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        if k in meta:
            check(keys.get(k) == meta[k], f"{name}: {k} {keys.get(k)} (the vocabulary's {meta[k]})")
    r = run([a.vectors, a.vocab_dir, name, out])
    check(r.returncode == 0, f"{name}: the output file's tokenizer gives the published vectors' ids: "
          + (r.stdout.strip().replace("\n", "; ") or r.stderr[-600:]))
    if r.returncode != 0:
        print(r.stderr[-2000:])
    r = run([a.infernode, "generate", "-m", out, "-p", "Hello world", "-n", "2", "--temp", "0"])
    check(r.returncode == 0, f"{name}: generate takes a text prompt on the output" + ("" if r.returncode == 0
                                                                                       else ": " + r.stderr[-300:]))


def test_gguf_input(a):
    out = os.path.join(a.work, "gguf-w8.gguf")
    r = run([a.infernode, "quantize", "-m", a.model, "-o", out, "--scheme", "rtn-w8"])
    check(r.returncode == 0, "quantize of the GGUF model")
    if r.returncode == 0:
        src, dst = tokenizer_keys(a.model), tokenizer_keys(out)
        check(len(src) > 0 and src == dst, f"a GGUF input's {len(src)} tokenizer keys are copied as they are")


def test_no_tokenizer(a):
    src = os.path.join(a.work, "no-tokenizer")
    hf_dir(src, 300)
    out = os.path.join(a.work, "no-tokenizer-w8.gguf")
    if os.path.exists(out):
        os.remove(out)
    r = run([a.infernode, "quantize", "-m", src, "-o", out, "--scheme", "rtn-w8"])
    check(r.returncode == 0 and os.path.exists(out), "without a tokenizer the file is still written")
    check("no tokenizer.json" in r.stderr and "gets no tokenizer" in r.stderr,
          "stderr says the input has no tokenizer and the output gets none: " + r.stderr.strip().replace("\n", " | ")[:300])
    if os.path.exists(out):
        check(not tokenizer_keys(out), "the output has no tokenizer keys")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--vocab-dir", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    test_gguf_input(a)
    test_no_tokenizer(a)
    if not os.path.isdir(a.vocab_dir):
        if os.environ.get("CI") == "true":
            print(f"FAIL: {a.vocab_dir} is absent (the shared vocabularies), and CI must have it")
            return 1
        print(f"skip: {a.vocab_dir} is absent (the shared vocabularies)")
        return 1 if failures else 77
    for name in VOCABS:
        test_hf(a, name)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
