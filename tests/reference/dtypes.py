"""Weight encodings shared by the writers: fp16, bf16 and the GGUF block formats.

Every encoder returns the bytes to store; every decoder turns those bytes back into the exact
values a reader sees. The writers round-trip each tensor through its encoding so that the
reference computes with precisely the values in the file.

Block formats (GGUF layout, 32 values per block, little-endian):
  Q8_0 { fp16 d; int8 q[32]; }            value = d * q
  Q4_0 { fp16 d; uint8 qs[16]; }          value = d * (nibble - 8)
  Q4_1 { fp16 d; fp16 m; uint8 qs[16]; }  value = d * nibble + m
In Q4_0/Q4_1 byte j holds value j in its low nibble and value j + 16 in its high nibble.

K-quants (ggml's super-blocks of QK_K = 256 values):
  Q4_K { fp16 d; fp16 dmin; uint8 scales[12]; uint8 qs[128]; }
       eight sub-blocks of 32 with 6-bit scale sc_j and min m_j packed in `scales`: for j < 4
       the low 6 bits of bytes j (sc) and j + 4 (m); for j >= 4 the low (sc) and high (m)
       nibble of byte j + 4, their top 2 bits in bits 6-7 of bytes j - 4 (sc) and j (m).
       value = (d * sc_j) * q - dmin * m_j, in fp32; sub-blocks 2c and 2c + 1 are the low and
       high nibbles of qs[32c : 32c + 32].
  Q6_K { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; fp16 d; }
       value v = d * scales[v // 16] * (q - 32), q of 6 bits. Each half of 128 values uses 64
       bytes of ql and 32 of qh: its value 32k + l (k < 4, l < 32) has its low 4 bits in
       ql[l + 32 * (k % 2)] (low nibble for k < 2, high for k >= 2) and its top 2 bits in
       bits 2k, 2k + 1 of qh[l].
The K-quant quantizers here are simple (round to nearest at every level), not llama.cpp's
search for the best scales; any valid bytes serve, since readers are judged on the values
the bytes decode to.
"""
import numpy as np

QK = 32
QK_K = 256

# ggml type ids as written in GGUF tensor infos.
GGML_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14,
             "I8": 24, "I32": 26, "BF16": 30}

_Q8_0 = np.dtype([("d", "<f2"), ("q", "i1", (QK,))])
_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_Q4_1 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (QK // 2,))])
_Q4_K = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qs", "u1", (128,))])
_Q6_K = np.dtype([("ql", "u1", (128,)), ("qh", "u1", (64,)), ("scales", "i1", (16,)),
                  ("d", "<f2")])


def f32_to_bf16_bits(x):
    """fp32 -> bf16 bit patterns, round to nearest even (inputs are finite)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint32) << 16).view(np.float32)


def _blocks(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % QK:
        raise ValueError(f"row length {x.shape[-1]} is not a multiple of {QK}")
    return x.reshape(-1, QK)


def _pack_nibbles(q):
    q = q.astype(np.uint8)
    return q[:, : QK // 2] | (q[:, QK // 2 :] << 4)


def _unpack_nibbles(qs):
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def _safe_inverse(d):
    out = np.zeros_like(d)
    np.divide(1.0, d, out=out, where=d != 0)
    return out


def quantize_q8_0(x):
    b = _blocks(x)
    d = np.abs(b).max(axis=1) / 127.0
    q = np.clip(np.round(b * _safe_inverse(d)[:, None]), -127, 127)
    out = np.zeros(len(b), dtype=_Q8_0)
    out["d"] = d.astype(np.float16)
    out["q"] = q.astype(np.int8)
    return out.tobytes()


def quantize_q4_0(x):
    b = _blocks(x)
    idx = np.abs(b).argmax(axis=1)
    signed_max = b[np.arange(len(b)), idx]
    d = signed_max / -8.0
    q = np.clip(np.round(b * _safe_inverse(d)[:, None]) + 8, 0, 15)
    out = np.zeros(len(b), dtype=_Q4_0)
    out["d"] = d.astype(np.float16)
    out["qs"] = _pack_nibbles(q)
    return out.tobytes()


def quantize_q4_1(x):
    b = _blocks(x)
    lo = b.min(axis=1)
    hi = b.max(axis=1)
    d = (hi - lo) / 15.0
    q = np.clip(np.round((b - lo[:, None]) * _safe_inverse(d)[:, None]), 0, 15)
    out = np.zeros(len(b), dtype=_Q4_1)
    out["d"] = d.astype(np.float16)
    out["m"] = lo.astype(np.float16)
    out["qs"] = _pack_nibbles(q)
    return out.tobytes()


def _super_blocks(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % QK_K:
        raise ValueError(f"row length {x.shape[-1]} is not a multiple of {QK_K}")
    return x.reshape(-1, QK_K)


def _pack_q4_k_scales(sc, m):
    """[nb, 8] 6-bit scales and mins -> [nb, 12] bytes."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    out = np.zeros((len(sc), 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return out


def _unpack_q4_k_scales(b):
    """[nb, 12] bytes -> ([nb, 8] scales, [nb, 8] mins)."""
    b = b.astype(np.int64)
    sc = np.concatenate([b[:, 0:4] & 63, (b[:, 8:12] & 0x0F) | ((b[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([b[:, 4:8] & 63, (b[:, 8:12] >> 4) | ((b[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def quantize_q4_k(x):
    """Sub-block j: min mn_j = min(0, min x), scale (max - mn_j) / 15; d and dmin put the
    largest of those on 63; every level rounds to nearest."""
    b = _super_blocks(x)
    sub = b.reshape(len(b), 8, 32)
    mn = np.minimum(sub.min(axis=2), 0.0)
    scale = (sub.max(axis=2) - mn) / np.float32(15)
    d = (scale.max(axis=1) / np.float32(63)).astype(np.float16)
    dmin = ((-mn).max(axis=1) / np.float32(63)).astype(np.float16)
    sc = np.clip(np.round(scale * _safe_inverse(d.astype(np.float32))[:, None]), 0, 63)
    m = np.clip(np.round(-mn * _safe_inverse(dmin.astype(np.float32))[:, None]), 0, 63)
    step = d.astype(np.float32)[:, None] * sc.astype(np.float32)
    offset = dmin.astype(np.float32)[:, None] * m.astype(np.float32)
    q = np.clip(np.round((sub + offset[:, :, None]) * _safe_inverse(step)[:, :, None]), 0, 15)
    q = q.astype(np.uint8).reshape(len(b), 4, 2, 32)
    out = np.zeros(len(b), dtype=_Q4_K)
    out["d"] = d
    out["dmin"] = dmin
    out["scales"] = _pack_q4_k_scales(sc, m)
    out["qs"] = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(len(b), 128)
    return out.tobytes()


def quantize_q6_k(x):
    """Sub-block of 16: its signed extreme maps to q = -32 (scale = extreme / -32), as Q4_0
    does with -8; d puts the largest |scale| on 127; every level rounds to nearest."""
    b = _super_blocks(x)
    sub = b.reshape(len(b), 16, 16)
    idx = np.abs(sub).argmax(axis=2)
    scale = np.take_along_axis(sub, idx[:, :, None], axis=2)[:, :, 0] / np.float32(-32)
    d = (np.abs(scale).max(axis=1) / np.float32(127)).astype(np.float16)
    sc = np.clip(np.round(scale * _safe_inverse(d.astype(np.float32))[:, None]), -128, 127)
    step = d.astype(np.float32)[:, None] * sc.astype(np.float32)
    q = np.clip(np.round(sub * _safe_inverse(step)[:, :, None]), -32, 31)
    u = (q + 32).astype(np.uint8).reshape(len(b), 2, 4, 32)          # [block, half, k, l]
    ql = np.concatenate([(u[:, :, 0] & 0x0F) | ((u[:, :, 2] & 0x0F) << 4),
                         (u[:, :, 1] & 0x0F) | ((u[:, :, 3] & 0x0F) << 4)], axis=2)
    qh = (u[:, :, 0] >> 4) | ((u[:, :, 1] >> 4) << 2) | ((u[:, :, 2] >> 4) << 4) \
        | ((u[:, :, 3] >> 4) << 6)
    out = np.zeros(len(b), dtype=_Q6_K)
    out["ql"] = ql.reshape(len(b), 128)
    out["qh"] = qh.reshape(len(b), 64)
    out["scales"] = sc.astype(np.int8)
    out["d"] = d
    return out.tobytes()


def decode_q4_k(buf, n):
    """float32 values of n Q4_K values, computed as ggml does: the products are exact in fp32,
    the subtraction rounds once."""
    b = np.frombuffer(buf, dtype=_Q4_K, count=n // QK_K)
    sc, m = _unpack_q4_k_scales(b["scales"])
    step = b["d"].astype(np.float32)[:, None] * sc.astype(np.float32)
    offset = b["dmin"].astype(np.float32)[:, None] * m.astype(np.float32)
    qs = b["qs"].reshape(len(b), 4, 1, 32)
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(len(b), 8, 32).astype(np.float32)
    return (step[:, :, None] * q - offset[:, :, None]).reshape(-1)


def decode_q6_k(buf, n):
    """Values of n Q6_K values (exact: d * scale * q needs at most 23 bits)."""
    b = np.frombuffer(buf, dtype=_Q6_K, count=n // QK_K)
    ql = b["ql"].reshape(len(b), 2, 1, 64)
    qh = b["qh"].reshape(len(b), 2, 1, 32)
    low = np.concatenate([ql[..., :32] & 0x0F, ql[..., 32:] & 0x0F, ql[..., :32] >> 4,
                          ql[..., 32:] >> 4], axis=2)                  # [block, half, k, l]
    high = np.concatenate([(qh >> (2 * k)) & 3 for k in range(4)], axis=2)
    q = (low.astype(np.int64) | (high.astype(np.int64) << 4)).reshape(len(b), 16, 16) - 32
    scale = b["d"].astype(np.float64)[:, None] * b["scales"].astype(np.float64)
    return (scale[:, :, None] * q).reshape(-1)


def encode(x, dtype):
    """Bytes of x (any shape, rows along the last axis) stored as dtype."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "F32":
        return x.astype("<f4").tobytes()
    if dtype == "F16":
        return x.astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(x).astype("<u2").tobytes()
    if dtype == "Q8_0":
        return quantize_q8_0(x)
    if dtype == "Q4_0":
        return quantize_q4_0(x)
    if dtype == "Q4_1":
        return quantize_q4_1(x)
    if dtype == "Q4_K":
        return quantize_q4_k(x)
    if dtype == "Q6_K":
        return quantize_q6_k(x)
    if dtype == "I8":
        return x.astype("i1").tobytes()
    if dtype == "I32":
        return x.astype("<i4").tobytes()
    raise ValueError(f"unknown dtype {dtype}")


def decode(buf, dtype, shape):
    """Values (float64) of bytes buf holding a tensor of the given numpy shape."""
    n = int(np.prod(shape))
    if dtype == "F32":
        v = np.frombuffer(buf, dtype="<f4", count=n)
    elif dtype == "F16":
        v = np.frombuffer(buf, dtype="<f2", count=n)
    elif dtype == "BF16":
        v = bf16_bits_to_f32(np.frombuffer(buf, dtype="<u2", count=n))
    elif dtype == "Q8_0":
        b = np.frombuffer(buf, dtype=_Q8_0, count=n // QK)
        v = b["d"].astype(np.float64)[:, None] * b["q"]
    elif dtype == "Q4_0":
        b = np.frombuffer(buf, dtype=_Q4_0, count=n // QK)
        v = b["d"].astype(np.float64)[:, None] * (_unpack_nibbles(b["qs"]) - 8.0)
    elif dtype == "Q4_1":
        b = np.frombuffer(buf, dtype=_Q4_1, count=n // QK)
        v = (b["d"].astype(np.float64)[:, None] * _unpack_nibbles(b["qs"])
             + b["m"].astype(np.float64)[:, None])
    elif dtype == "Q4_K":
        v = decode_q4_k(buf, n)
    elif dtype == "Q6_K":
        v = decode_q6_k(buf, n)
    elif dtype == "I8":
        v = np.frombuffer(buf, dtype="i1", count=n)
    elif dtype == "I32":
        v = np.frombuffer(buf, dtype="<i4", count=n)
    else:
        raise ValueError(f"unknown dtype {dtype}")
    return np.asarray(v, dtype=np.float64).reshape(shape)


def roundtrip(x, dtype):
    """The values a reader sees after x is stored as dtype."""
    return decode(encode(x, dtype), dtype, np.shape(x))
