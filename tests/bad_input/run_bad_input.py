#!/usr/bin/python3
"""Bad-input tests: `infernode generate` on malformed model files and arguments.

  run_bad_input.py --infernode BIN --work DIR --group {gguf,safetensors,hf_config,gptq,llama2c,cli}

Each case must end with a non-zero exit that is not a signal, a message on stderr in which one
line names what is wrong (case-insensitive substrings: the file's path for file errors, the
tensor or key for content errors, "context"/"empty"/"vocab" for prompt errors), and no
sanitizer report. Every group first runs a valid control model, which must succeed, so an
engine that refuses everything cannot pass. The models are written fresh into DIR/GROUP."""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import numpy as np  # noqa: E402

import dtypes  # noqa: E402
import gguf_write  # noqa: E402
import gptq_write  # noqa: E402
import llama2c_io  # noqa: E402
import safetensors_write  # noqa: E402
from llama_model import LlamaConfig, hf_shapes, random_model  # noqa: E402

CFG = LlamaConfig(dim=64, hidden_dim=96, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300,
                  context_length=64)
SEED = 11
TIMEOUT = 60
SANITIZER_MARKS = ("Sanitizer", "runtime error:")


class FilePath(str):
    """An expected substring that is a path: it may appear in any of its spellings."""


class Case:
    def __init__(self, name, model, expect, prompt="1,5,7", n=4, any_of=None, may_succeed=False):
        self.name = name
        self.model = model
        self.expect = expect            # substrings that must all appear on one stderr line
        self.any_of = any_of or []      # one of these must appear on that line as well
        self.prompt = prompt
        self.n = n
        self.may_succeed = may_succeed  # only "no crash, no sanitizer report" is required


def run(infernode, model, prompt, n):
    cmd = [infernode, "generate", "-m", model, "--prompt-ids", prompt, "-n", str(n),
           "--temp", "0", "--ids"]
    try:
        return cmd, subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                                   timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return cmd, None


def path_forms(path):
    """The spellings of a path an error message may reasonably use."""
    forms = {path, os.path.normpath(path), os.path.abspath(path), os.path.realpath(path)}
    return tuple(f.lower() for f in forms)


def check(infernode, c):
    cmd, p = run(infernode, c.model, c.prompt, c.n)
    if p is None:
        return [f"hung (no exit within {TIMEOUT}s)"]
    problems = []
    if any(m in p.stderr for m in SANITIZER_MARKS):
        line = next(l for l in p.stderr.splitlines() if any(m in l for m in SANITIZER_MARKS))
        problems.append(f"sanitizer report: {line.strip()}")
    if p.returncode < 0:
        problems.append(f"killed by signal {-p.returncode}")
    elif c.may_succeed:
        return problems
    elif p.returncode == 0:
        problems.append(f"exit 0 (stdout {p.stdout.strip()[:80]!r})")
    lines = [l.lower().replace("//", "/") for l in p.stderr.splitlines() if l.strip()]
    if not lines:
        problems.append("no message on stderr")
        return problems

    # Words are looked for in the line with the paths taken out, so that a file named
    # "zero-heads.gguf" does not answer for the word "head".
    paths = sorted({f for e in c.expect if isinstance(e, FilePath) for f in path_forms(e)}
                   | set(path_forms(c.model)), key=len, reverse=True)

    def words(line):
        for f in paths:
            line = line.replace(f, " ")
        return line

    def has(line, want):
        if isinstance(want, tuple):                     # a path: any of its spellings
            return any(f in line for f in want)
        return want.lower() in words(line)

    want = [path_forms(e) if isinstance(e, FilePath) else e for e in c.expect]
    ok = [l for l in lines if all(has(l, w) for w in want)
          and (not c.any_of or any(a.lower() in words(l) for a in c.any_of))]
    if not ok:
        desc = [str(e) for e in c.expect]
        if c.any_of:
            desc.append("one of " + "/".join(c.any_of))
        msg = p.stderr.strip().replace("\n", " | ")
        problems.append(f"no stderr line contains {desc}; stderr: {msg[:400]!r}")
    return problems


# ---------------------------------------------------------------------------------------------
# model builders

def weights():
    return random_model(CFG, SEED)


def gguf_parts():
    tensors, _ = gguf_write.llama_tensors(CFG, weights(), "F32")
    return gguf_write.llama_metadata(CFG), tensors


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def patch_u64(data, pos, value):
    return data[:pos] + struct.pack("<Q", value) + data[pos + 8:]


def tensor_info_pos(data, name, n_dims):
    """Offset of the u32 type and u64 offset fields of a tensor info."""
    key = struct.pack("<Q", len(name)) + name.encode()
    i = data.index(key) + len(key) + 4 + 8 * n_dims
    return i, i + 4


def gguf_cases(d):
    md, tensors = gguf_parts()
    base = os.path.join(d, "valid.gguf")
    lay = gguf_write.write_gguf(base, md, tensors)
    data = open(base, "rb").read()
    cases = []

    def trunc(name, size):
        p = write_bytes(os.path.join(d, f"{name}.gguf"), data[:size])
        cases.append(Case(f"{name} ({size} of {len(data)} bytes)", p, [FilePath(p)]))

    trunc("empty", 0)
    trunc("truncated-in-magic", 3)
    trunc("truncated-in-header", 12)
    trunc("truncated-in-metadata-start", lay.kv_start + 5)
    trunc("truncated-in-metadata", (lay.kv_start + lay.tensor_infos_start) // 2)
    trunc("truncated-in-tensor-infos", (lay.tensor_infos_start + lay.data_start) // 2)
    trunc("truncated-at-data-start", lay.data_start)
    trunc("truncated-in-tensor-data", (lay.data_start + lay.size) // 2)
    trunc("truncated-last-byte", lay.size - 1)

    p = write_bytes(os.path.join(d, "wrong-magic.gguf"), b"GGUX" + data[4:])
    cases.append(Case("wrong magic", p, [FilePath(p)]))
    p = write_bytes(os.path.join(d, "version-99.gguf"), data[:4] + struct.pack("<I", 99) + data[8:])
    cases.append(Case("unsupported version 99", p, [FilePath(p)]))
    p = write_bytes(os.path.join(d, "huge-tensor-count.gguf"), patch_u64(data, 8, 1 << 62))
    cases.append(Case("n_tensors 2^62", p, [FilePath(p)]))
    p = write_bytes(os.path.join(d, "huge-kv-count.gguf"), patch_u64(data, 16, 1 << 62))
    cases.append(Case("n_kv 2^62", p, [FilePath(p)]))
    # the first key's length prefix
    p = write_bytes(os.path.join(d, "huge-key-length.gguf"), patch_u64(data, 24, (1 << 64) - 2))
    cases.append(Case("key length 2^64-2", p, [FilePath(p)]))

    def variant(name, md_, tensors_, expect, any_of=(), may_succeed=False):
        p = os.path.join(d, f"{name}.gguf")
        gguf_write.write_gguf(p, md_, tensors_)
        cases.append(Case(name, p, [FilePath(p)] + expect, any_of=list(any_of),
                          may_succeed=may_succeed))

    drop = "blk.1.ffn_up.weight"
    variant("missing-tensor", md, [t for t in tensors if t.name != drop], [drop])

    def replaced(name, **changes):
        out = []
        for t in tensors:
            if t.name == name:
                t = gguf_write.Tensor(**{**t.__dict__, **changes})
            out.append(t)
        return out

    rng = np.random.default_rng(0)
    bad = rng.standard_normal((2 * CFG.kv_dim, CFG.dim)).astype(np.float32)
    variant("wrong-shape", md, replaced("blk.0.attn_k.weight", ne=[CFG.dim, 2 * CFG.kv_dim],
                                        data=dtypes.encode(bad, "F32")),
            ["blk.0.attn_k.weight"])
    emb = rng.standard_normal((CFG.vocab_size - 1, CFG.dim)).astype(np.float32)
    variant("wrong-shape-embedding", md,
            replaced("token_embd.weight", ne=[CFG.dim, CFG.vocab_size - 1],
                     data=dtypes.encode(emb, "F32")), ["token_embd.weight"])
    variant("wrong-ndims", md, replaced("blk.0.attn_norm.weight", ne=[CFG.dim // 2, 2]),
            ["blk.0.attn_norm.weight"])
    variant("unknown-type-77", md, replaced("blk.0.ffn_gate.weight", type_id=77),
            ["blk.0.ffn_gate.weight"])
    variant("huge-dims", md, replaced("blk.0.ffn_down.weight", ne=[1 << 32, 1 << 32]),
            ["blk.0.ffn_down.weight"])
    # A model whose rows (dim 48) do not fill whole Q8_0 blocks; attn_v is stored as Q8_0 with
    # the byte count a reader that rounds 48/32 down would expect.
    cfg48 = CFG.with_(dim=48, n_heads=4, n_kv_heads=2)
    t48, _ = gguf_write.llama_tensors(cfg48, random_model(cfg48, SEED), "F32")
    vname = "blk.0.attn_v.weight"
    t48 = [gguf_write.Tensor(t.name, t.ne, dtypes.GGML_TYPE["Q8_0"], b"\0" * (34 * cfg48.kv_dim))
           if t.name == vname else t for t in t48]
    variant("q8_0-row-not-multiple-of-32", gguf_write.llama_metadata(cfg48), t48, [vname])
    # K-quants: rows of 64 values in a Q6_K tensor (super-blocks hold 256), with the bytes of
    # one super-block per row; and a Q4_K file cut inside its last tensor.
    t64 = [gguf_write.Tensor(t.name, t.ne, dtypes.GGML_TYPE["Q6_K"], b"\0" * (210 * CFG.kv_dim))
           if t.name == vname else t for t in tensors]
    variant("q6_k-row-not-multiple-of-256", md, t64, [vname, "256"])
    cfg256 = CFG.with_(dim=256, hidden_dim=256, n_layers=1, head_dim=64)
    k_path = os.path.join(d, "q4_k-valid.gguf")
    _, k_lay = gguf_write.write_llama(k_path, cfg256, random_model(cfg256, SEED), "Q4_K")
    k_data = open(k_path, "rb").read()
    p = write_bytes(os.path.join(d, "q4_k-truncated-in-output.gguf"),
                    k_data[:k_lay.tensor_offsets["output.weight"] + 1000])
    cases.append(Case("q4_k-truncated-in-output", p, [FilePath(p), "output.weight"]))
    variant("missing-key-embedding-length",
            [m for m in md if m[0] != "llama.embedding_length"], tensors,
            ["llama.embedding_length"])
    variant("key-wrong-type",
            [(k, gguf_write.STRING, "sixty-four") if k == "llama.block_count" else (k, t, v)
             for k, t, v in md], tensors, ["llama.block_count"])
    variant("zero-heads",
            [(k, t, 0) if k == "llama.attention.head_count" else (k, t, v) for k, t, v in md],
            tensors, [], any_of=["head_count", "head"])
    # Refusing is expected; falling back to the default alignment is tolerated. It must not
    # divide by zero.
    variant("alignment-zero",
            [(k, t, 0) if k == "general.alignment" else (k, t, v) for k, t, v in md],
            tensors, [], may_succeed=True)

    for name, off in (("tensor-offset-beyond-file", 1 << 40),
                      ("tensor-offset-overflow", (1 << 64) - 32)):
        # blk.1.attn_norm.weight: offset pushed out of the file
        tname = "blk.1.attn_norm.weight"
        _, opos = tensor_info_pos(data, tname, 1)
        p = write_bytes(os.path.join(d, f"{name}.gguf"), patch_u64(data, opos, off))
        cases.append(Case(name, p, [FilePath(p), tname]))
    tname = "blk.0.attn_q.weight"
    opos = tensor_info_pos(data, tname, 2)[1]
    misaligned = struct.unpack_from("<Q", data, opos)[0] + 4
    p = write_bytes(os.path.join(d, "tensor-offset-misaligned.gguf"),
                    patch_u64(data, opos, misaligned))
    cases.append(Case("tensor-offset-misaligned", p, [FilePath(p), tname]))
    return base, cases


def hf_dir(d, name, w=None, dtype="F32", shards=1):
    path = os.path.join(d, name)
    shutil.rmtree(path, ignore_errors=True)
    safetensors_write.write_hf(path, CFG, w if w is not None else weights(), dtype, shards)
    return path


def st_entries(w):
    return [(n, "F32", w[n].shape, dtypes.encode(w[n], "F32")) for n in hf_shapes(CFG)]


def safetensors_cases(d):
    w = weights()
    base = hf_dir(d, "valid")
    cases = []

    def with_file(name, blob):
        path = hf_dir(d, name, w)
        st = os.path.join(path, "model.safetensors")
        write_bytes(st, blob)
        return st

    good = open(os.path.join(base, "model.safetensors"), "rb").read()
    (hlen,) = struct.unpack_from("<Q", good, 0)

    st = with_file("short-length-prefix", good[:5])
    cases.append(Case("file shorter than the 8-byte header length", os.path.dirname(st),
                      [FilePath(st)]))
    st = with_file("truncated-header", good[:8 + hlen // 2])
    cases.append(Case("file ends inside the JSON header", os.path.dirname(st), [FilePath(st)]))
    st = with_file("header-length-beyond-file", patch_u64(good, 0, len(good) + 1000))
    cases.append(Case("header length beyond the file", os.path.dirname(st), [FilePath(st)]))
    st = with_file("header-length-huge", patch_u64(good, 0, (1 << 64) - 1))
    cases.append(Case("header length 2^64-1", os.path.dirname(st), [FilePath(st)]))
    st = with_file("header-not-json", good[:8] + b"{" + b"x" * (hlen - 1) + good[8 + hlen:])
    cases.append(Case("header is not JSON", os.path.dirname(st), [FilePath(st)]))

    def header_variant(name, mutate, expect, names=(), whole_model=False):
        entries = st_entries(w)
        header_blob = safetensors_write.safetensors_bytes(entries)
        (n,) = struct.unpack_from("<Q", header_blob, 0)
        header = json.loads(header_blob[8:8 + n])
        mutate(header)
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        st = with_file(name, struct.pack("<Q", len(h)) + h + header_blob[8 + n:])
        # A tensor that does not fit the model (absent, wrong shape) is a fault of the whole
        # directory, so naming the directory is enough there.
        where = FilePath(os.path.dirname(st)) if whole_model else FilePath(st)
        cases.append(Case(name, os.path.dirname(st), [where] + expect, any_of=list(names)))

    q = "model.layers.0.self_attn.q_proj.weight"
    q_gguf = "blk.0.attn_q.weight"
    data_size = sum(len(e[3]) for e in st_entries(w))

    def offsets_beyond(h):
        h[q]["data_offsets"][1] = data_size + 4096
    header_variant("data-offsets-beyond-file", offsets_beyond, [], [q, q_gguf])

    def offsets_reversed(h):
        a, b = h[q]["data_offsets"]
        h[q]["data_offsets"] = [b, a]
    header_variant("data-offsets-reversed", offsets_reversed, [], [q, q_gguf])

    def offsets_wrong_size(h):
        h[q]["data_offsets"][1] -= 4
    header_variant("data-offsets-size-mismatch", offsets_wrong_size, [], [q, q_gguf])

    def offsets_huge(h):
        h[q]["data_offsets"] = [(1 << 64) - 16, (1 << 64) - 16 + 4 * CFG.q_dim * CFG.dim]
    header_variant("data-offsets-overflow", offsets_huge, [], [q, q_gguf])

    def unknown_dtype(h):
        h[q]["dtype"] = "Q7"
    header_variant("unknown-dtype", unknown_dtype, [], [q, q_gguf])

    def wrong_shape(h):
        h[q]["shape"] = [CFG.q_dim // 2, CFG.dim * 2]
    header_variant("wrong-shape", wrong_shape, [], [q, q_gguf], whole_model=True)

    def shape_2_pow_63(h):
        h[q]["shape"] = [1 << 63, CFG.dim]
    header_variant("shape-2-pow-63", shape_2_pow_63, [], [q, q_gguf])

    def offsets_1e30(h):
        h[q]["data_offsets"] = [0, 10 ** 30]
    header_variant("data-offsets-1e30", offsets_1e30, [], [q, q_gguf])

    up = "model.layers.1.mlp.up_proj.weight"
    header_variant("missing-tensor", lambda h: h.pop(up), [], [up, "blk.1.ffn_up.weight"],
                   whole_model=True)

    # sharded: the index names a shard that is not there
    path = hf_dir(d, "missing-shard", w, shards=2)
    gone = os.path.join(path, "model-00002-of-00002.safetensors")
    os.remove(gone)
    cases.append(Case("sharded, a shard file is missing", path,
                      ["model-00002-of-00002.safetensors"]))
    path = hf_dir(d, "index-not-json", w, shards=2)
    idx = os.path.join(path, "model.safetensors.index.json")
    write_bytes(idx, b'{"weight_map": {')
    cases.append(Case("sharded, index is not JSON", path, [FilePath(idx)]))
    path = hf_dir(d, "no-weights", w)
    os.remove(os.path.join(path, "model.safetensors"))
    cases.append(Case("directory without safetensors", path, [FilePath(path)]))
    return base, cases


def hf_config_cases(d):
    w = weights()
    base = hf_dir(d, "valid", w)
    cases = []

    def cfg_variant(name, text, expect, any_of=(), whole_model=False):
        path = hf_dir(d, name, w)
        cj = os.path.join(path, "config.json")
        if text is None:
            os.remove(cj)
        else:
            write_bytes(cj, text.encode())
        # A value that parses but makes no sense may be reported against the directory.
        where = FilePath(path) if whole_model else FilePath(cj)
        cases.append(Case(name, path, [where] + expect, any_of=list(any_of)))

    good = safetensors_write.hf_config(CFG)
    cfg_variant("config-not-json", '{"hidden_size": 64, "num_hidden_layers": ', [])
    cfg_variant("config-empty", "", [])
    cfg_variant("config-is-array", "[1, 2, 3]", [])
    cfg_variant("config-missing", None, [])
    cfg_variant("config-lacks-hidden_size",
                json.dumps({k: v for k, v in good.items() if k != "hidden_size"}),
                ["hidden_size"])
    cfg_variant("config-hidden_size-string", json.dumps({**good, "hidden_size": "64"}),
                ["hidden_size"])
    cfg_variant("config-zero-heads", json.dumps({**good, "num_attention_heads": 0}),
                [], ["num_attention_heads", "head"], whole_model=True)
    cfg_variant("config-negative-layers", json.dumps({**good, "num_hidden_layers": -2}),
                [], ["num_hidden_layers", "layer"], whole_model=True)
    cfg_variant("config-kv-heads-not-dividing",
                json.dumps({**good, "num_key_value_heads": 3}), [],
                ["num_key_value_heads", "kv head"], whole_model=True)
    # Numbers no integer or float holds: refused naming the field, and range-checked before
    # any conversion (1e999 parses to inf; a cast of it to an integer is undefined behaviour).
    text = json.dumps(good)
    for name, number in (("1e999", "1e999"), ("minus-1e999", "-1e999"), ("1e30", "1e30"),
                         ("2-pow-63", "9223372036854775808"), ("minus-2-pow-63", "-9223372036854775809"),
                         ("2-pow-64", "18446744073709551616"), ("fraction", "64.5")):
        cfg_variant(f"config-hidden_size-{name}",
                    text.replace(f'"hidden_size": {CFG.dim}', f'"hidden_size": {number}'), ["hidden_size"])
    cfg_variant("config-max_position_embeddings-1e999",
                text.replace(f'"max_position_embeddings": {CFG.context_length}',
                             '"max_position_embeddings": 1e999'), ["max_position_embeddings"])
    for key, number in (("rope_theta", "1e999"), ("rope_theta", "-1e999"), ("rms_norm_eps", "1e39")):
        cfg_variant(f"config-{key}-{number}", json.dumps({**good, key: 0}).replace(f'"{key}": 0', f'"{key}": {number}'),
                    [key])
    cfg_variant("config-hidden_size-NaN", text.replace(f'"hidden_size": {CFG.dim}', '"hidden_size": NaN'), [])
    return base, cases


def gptq_cases(d):
    """A GPTQ checkpoint (act-order, asymmetric, groups of 32, config.json's
    quantization_config) with one thing wrong at a time: tensors, their shapes, types and
    contents, and the config."""
    opts = gptq_write.Options(group_size=32, act_order=True, sym=False)
    quant = gptq_write.quant_config(opts)
    good_cfg = safetensors_write.hf_config(CFG, "F16")
    entries, _ = gptq_write.quantize_model(CFG, weights(), opts)
    rng = np.random.default_rng(5)
    cases = []

    def variant(name, expect, entries_=entries, quant_=quant, layout="transformers", any_of=()):
        path = os.path.join(d, name)
        gptq_write.write_dir(path, good_cfg, entries_, quant_, layout)
        st = os.path.join(path, "model.safetensors")
        cj = os.path.join(path, "config.json" if layout == "transformers" else "quantize_config.json")
        want = [FilePath(cj) if e == "CONFIG" else FilePath(st) if e == "FILE" else e for e in expect]
        cases.append(Case(name, path, want, any_of=list(any_of)))
        return path

    def replaced(tensor, array=None, dtype=None, drop=False):
        out = []
        for e in entries:
            if e[0] == tensor:
                if drop:
                    continue
                a = np.asarray(array)
                dt = dtype or {np.dtype(np.int32): "I32", np.dtype(np.float16): "F16",
                               np.dtype(np.float32): "F32"}[a.dtype]
                e = (tensor, dt, a.shape, a.tobytes())
            out.append(e)
        return out

    def tensor(name):
        _, dt, shape, data = next(e for e in entries if e[0] == name)
        return np.frombuffer(data, {"I32": "<i4", "F16": "<f2"}[dt]).reshape(shape).copy()

    base = variant("valid", [])
    cases.pop()
    L0, L1 = "model.layers.0.", "model.layers.1."
    q, k, v, o = (L0 + "self_attn." + p for p in ("q_proj", "k_proj", "v_proj", "o_proj"))
    gate, up, down = (L1 + "mlp." + p for p in ("gate_proj", "up_proj", "down_proj"))
    ints = lambda *shape: rng.integers(0, 1 << 30, shape, dtype=np.int32)  # noqa: E731
    variant("qweight-rows-not-in-over-8", ["FILE", q + ".qweight"],
            replaced(q + ".qweight", ints(CFG.dim // 8 - 2, CFG.q_dim)))
    variant("qweight-cols-not-out", ["FILE", k + ".qweight"],
            replaced(k + ".qweight", ints(CFG.dim // 8, 2 * CFG.kv_dim)))
    variant("scales-group-count", ["FILE", v + ".scales"],
            replaced(v + ".scales", np.ones((3, CFG.kv_dim), np.float16)))
    variant("qzeros-group-count", ["FILE", o + ".qzeros"],
            replaced(o + ".qzeros", ints(1, CFG.dim // 8)))
    variant("qzeros-f32", ["FILE", gate + ".qzeros", "i32"],
            replaced(gate + ".qzeros", tensor(gate + ".qzeros").astype(np.float32)))
    variant("g_idx-length", ["FILE", up + ".g_idx"],
            replaced(up + ".g_idx", tensor(up + ".g_idx")[:-1]))
    g = tensor(down + ".g_idx")
    g[5] = CFG.hidden_dim // 32
    variant("g_idx-out-of-range", ["FILE", down + ".g_idx"], replaced(down + ".g_idx", g))
    g = tensor(q + ".g_idx")
    g[np.flatnonzero(g == 0)[0]] = 1
    variant("g_idx-groups-of-31-and-33", ["FILE", q + ".g_idx", "group"], replaced(q + ".g_idx", g))
    variant("g_idx-missing-with-desc_act", ["FILE", k + ".g_idx"], replaced(k + ".g_idx", drop=True))
    variant("scales-missing", ["FILE", v + ".scales"], replaced(v + ".scales", drop=True))
    z = tensor(o + ".qzeros")
    z[1, 0] |= 0xF << 8                                  # output 2 of group 1: stored 15, zero 16
    variant("zero-point-16", ["FILE", o + ".qzeros"], replaced(o + ".qzeros", z))
    variant("bias-nonzero", ["FILE", up + ".bias"],
            entries + [(up + ".bias", "F16", (CFG.hidden_dim,), np.full(CFG.hidden_dim, 0.5, "<f2").tobytes())])
    variant("bits-8", ["CONFIG", "bits"], quant_={**quant, "bits": 8})
    variant("bits-1e30", ["CONFIG", "bits"], quant_={**quant, "bits": 10 ** 30})
    variant("group_size-minus-2-pow-63", ["CONFIG", "group_size"], quant_={**quant, "group_size": -(1 << 63)})
    variant("group_size-256", ["CONFIG", "group_size"], quant_={**quant, "group_size": 256})
    variant("group_size-64-in-config-32-in-file", ["FILE", "scales"], quant_={**quant, "group_size": 64})
    variant("quant_method-awq", ["CONFIG", "awq"], quant_={**quant, "quant_method": "awq"})
    variant("checkpoint_format-marlin", ["CONFIG", "marlin"], quant_={**quant, "checkpoint_format": "marlin"})
    variant("autogptq-bits-3", ["CONFIG", "bits"], quant_={**quant, "bits": 3}, layout="autogptq")
    path = variant("no-quantization-config", ["FILE", "qweight", "quantization_config"], quant_=None)
    path = variant("quantize_config-not-json", ["CONFIG"], layout="autogptq")
    write_bytes(os.path.join(path, "quantize_config.json"), b'{"bits": 4, "group_size": ')
    return base, cases


def llama2c_cases(d):
    base = os.path.join(d, "valid.bin")
    llama2c_io.write(base, CFG, weights())
    data = open(base, "rb").read()
    cases = []

    def variant(name, blob):
        p = write_bytes(os.path.join(d, f"{name}.bin"), blob)
        cases.append(Case(f"{name} ({len(blob)} bytes)", p, [FilePath(p)]))

    variant("empty", b"")
    variant("inside-header", data[:10])
    variant("header-only", data[:28])
    variant("truncated-weights", data[: len(data) // 2])
    variant("truncated-last-byte", data[:-1])
    hdr = list(struct.unpack_from("<7i", data, 0))

    def header(**kw):
        h = dict(zip(("dim", "hidden", "layers", "heads", "kv", "vocab", "seq"), hdr))
        h.update(kw)
        return struct.pack("<7i", *h.values()) + data[28:]

    variant("zero-heads", header(heads=0))
    variant("negative-dim", header(dim=-64))
    variant("kv-heads-over-heads", header(kv=8))
    variant("huge-vocab", header(vocab=1 << 30))
    # the valid file has a separate classifier (CFG is untied); cut it off
    variant("separate-classifier-missing", data[: len(data) - 4 * CFG.vocab_size * CFG.dim])
    return base, cases


def cli_cases(d):
    base = os.path.join(d, "valid.gguf")
    gguf_write.write_llama(base, CFG, weights(), "F32")
    os.makedirs(os.path.join(d, "empty-dir"))
    ctx = CFG.context_length
    too_long = ",".join(["1"] + ["5"] * ctx)
    return base, [
        Case(f"prompt of {ctx + 1} ids, context {ctx}", base, ["context"], prompt=too_long),
        Case("empty prompt", base, ["empty"], prompt=""),
        Case(f"prompt id {CFG.vocab_size} = vocab size", base, ["vocab"],
             prompt=f"1,{CFG.vocab_size},7"),
        Case("prompt id 2^40", base, [], prompt="1,1099511627776",
             any_of=["vocab", "range", "1099511627776"]),
        Case("negative prompt id", base, [], prompt="1,-3",
             any_of=["vocab", "range", "negative", "-3", "invalid"]),
        Case("prompt ids not numbers", base, [], prompt="1,abc,3",
             any_of=["abc", "prompt", "invalid"]),
        Case("model path does not exist", os.path.join(d, "no-such-model.gguf"),
             [FilePath(os.path.join(d, "no-such-model.gguf"))]),
        Case("model path is an empty directory", os.path.join(d, "empty-dir"),
             [FilePath(os.path.join(d, "empty-dir"))]),
        # The prompt fits but prompt + n does not: stopping early or refusing are both fine;
        # it must not crash or overrun the KV cache.
        Case(f"prompt {ctx - 4} ids + 16 new > context {ctx}", base, [],
             prompt=",".join(["1"] + ["5"] * (ctx - 5)), n=16, may_succeed=True),
    ]


GROUPS = {"gguf": gguf_cases, "safetensors": safetensors_cases, "hf_config": hf_config_cases,
          "gptq": gptq_cases, "llama2c": llama2c_cases, "cli": cli_cases}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infernode", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--group", required=True, choices=sorted(GROUPS))
    a = ap.parse_args()
    if not os.access(a.infernode, os.X_OK):
        print(f"FAIL: {a.infernode} is not an executable")
        return 1
    d = os.path.join(a.work, a.group)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    control, cases = GROUPS[a.group](d)

    failed = 0
    cmd, p = run(a.infernode, control, "1,5,7", 4)
    if p is None or p.returncode != 0 or any(m in p.stderr for m in SANITIZER_MARKS):
        why = "hung" if p is None else f"exit {p.returncode}: {p.stderr.strip()[-300:]!r}"
        print(f"FAIL control (valid model {control}) does not run: {why}")
        failed += 1
    else:
        print(f"PASS control: valid model runs ({p.stdout.strip()})")
    for c in cases:
        problems = check(a.infernode, c)
        if problems:
            failed += 1
            print(f"FAIL {c.name}: {'; '.join(problems)}\n     model: {c.model}", flush=True)
        else:
            print(f"PASS {c.name}", flush=True)
    total = len(cases) + 1
    print(f"{total - failed}/{total} cases of group {a.group} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
