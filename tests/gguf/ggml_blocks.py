"""NumPy reference for the GGUF block types Q5_0, Q5_1, IQ4_NL, Q5_K, Q3_K and Q2_K, written
from ggml's block layouts (little-endian, fp16 scales):

  Q5_0   { fp16 d; u8 qh[4]; u8 qs[16]; }           32 values  value = d * (q - 16)
  Q5_1   { fp16 d; fp16 m; u8 qh[4]; u8 qs[16]; }   32 values  value = d * q + m
         q has 5 bits: bits 0-3 are Q4_0's nibbles (byte j: value j low, value j + 16 high),
         bit 4 of value j is bit j of qh read as a little-endian u32.
  IQ4_NL { fp16 d; u8 qs[16]; }                     32 values  value = d * KVALUES[nibble]
  Q5_K   { fp16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }          256 values
         eight sub-blocks of 32 with Q4_K's 6-bit scale sc_j / min m_j packing; value 32j + l
         has q = nibble + 16 * (bit j of qh[l]), the nibble being the low (j even) or high
         (j odd) half of qs[32 (j // 2) + l]; value = (d * sc_j) * q - dmin * m_j.
  Q3_K   { u8 hmask[32]; u8 qs[64]; u8 scales[12]; fp16 d; }              256 values
         sixteen sub-blocks of 16 with 6-bit scales s_i (stored + 32): low 4 bits in byte
         i % 8 (low nibble for i < 8, high nibble after), top 2 bits at bit 2 (i // 4) of byte
         8 + i % 4. Value v = 128 h + 32 k + l: 2 bits at bit 2k of qs[32 h + l], a high bit at
         bit 4h + k of hmask[l]; q = bits - 4 when the high bit is clear;
         value = (d * s_{v // 16}) * q.
  Q2_K   { u8 scales[16]; u8 qs[64]; fp16 d, dmin; }                      256 values
         sixteen sub-blocks of 16; scales[i] holds sc (low nibble) and m (high nibble); q is
         Q3_K's 2 bits; value = (d * sc) * q - dmin * m.

Decoders compute in float32 in ggml's order (every product is exact, the one subtraction or
addition rounds once), so they give ggml's dequantization bit for bit. The encoders round to
nearest at every level: simple, not llama.cpp's search for the best scales; any valid bytes
serve, readers being judged on the values the bytes decode to.
"""
import numpy as np

QK = 32
QK_K = 256
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                   dtype=np.int8)

GGML_TYPE = {"Q5_0": 6, "Q5_1": 7, "Q2_K": 10, "Q3_K": 11, "Q5_K": 13, "IQ4_NL": 20}
BLOCK = {"Q5_0": (32, 22), "Q5_1": (32, 24), "IQ4_NL": (32, 18),
         "Q5_K": (256, 176), "Q3_K": (256, 110), "Q2_K": (256, 84)}   # values, bytes
FP16_AT = {"Q5_0": (0,), "Q5_1": (0, 2), "IQ4_NL": (0,), "Q5_K": (0, 2), "Q3_K": (108,),
           "Q2_K": (80, 82)}                                         # byte offsets of fp16s

_DT = {
    "Q5_0": np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", (16,))]),
    "Q5_1": np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", (16,))]),
    "IQ4_NL": np.dtype([("d", "<f2"), ("qs", "u1", (16,))]),
    "Q5_K": np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", (12,)), ("qh", "u1", (32,)),
                      ("qs", "u1", (128,))]),
    "Q3_K": np.dtype([("hmask", "u1", (32,)), ("qs", "u1", (64,)), ("scales", "u1", (12,)),
                      ("d", "<f2")]),
    "Q2_K": np.dtype([("scales", "u1", (16,)), ("qs", "u1", (64,)), ("d", "<f2"),
                      ("dmin", "<f2")]),
}
for _t, (_, _size) in BLOCK.items():
    assert _DT[_t].itemsize == _size, _t


def _f32(a):
    return np.asarray(a).astype(np.float32)


def _inv(d):
    out = np.zeros_like(d, dtype=np.float32)
    np.divide(np.float32(1), d, out=out, where=d != 0)
    return out


# --- bit layouts, shared by encoders and decoders -------------------------------------------

def _nibbles(qs):
    """[nb, 16] bytes -> [nb, 32] nibbles (value j low nibble of byte j, j + 16 high)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _pack_nibbles(u):
    u = u.astype(np.uint8)
    return u[:, :16] | (u[:, 16:] << 4)


def _q5_values(b):
    high = (b["qh"][:, None] >> np.arange(32, dtype=np.uint32)) & 1
    return _nibbles(b["qs"]).astype(np.int64) | (high.astype(np.int64) << 4)


def _q5_pack(out, q):
    out["qs"] = _pack_nibbles(q & 0x0F)
    out["qh"] = ((q >> 4).astype(np.uint64) << np.arange(32, dtype=np.uint64)).sum(axis=1)


def _two_bits(qs):
    """[nb, 64] bytes -> [nb, 256] 2-bit fields: value 128h + 32k + l at bit 2k of qs[32h + l]."""
    q = qs.reshape(len(qs), 2, 1, 32) >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]
    return (q & 3).reshape(len(qs), 256).astype(np.int64)


def _pack_two_bits(q):
    q = q.astype(np.uint8).reshape(len(q), 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(len(q), 64)


def _q3_high(hmask):
    """[nb, 32] -> [nb, 256]: bit 4h + k of hmask[l] for value 128h + 32k + l."""
    bits = (hmask[:, None, None, :] >> np.arange(8, dtype=np.uint8).reshape(1, 2, 4, 1)) & 1
    return bits.reshape(len(hmask), 256).astype(np.int64)


def _pack_q3_high(high):
    h = high.astype(np.uint8).reshape(len(high), 8, 32)
    return (h << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1).astype(np.uint8)


def _q3_scales(s):
    """[nb, 12] bytes -> [nb, 16] 6-bit scales (0..63)."""
    s = s.astype(np.int64)
    i = np.arange(16)
    low = (s[:, i % 8] >> (4 * (i // 8))) & 0x0F
    high = (s[:, 8 + i % 4] >> (2 * (i // 4))) & 3
    return low | (high << 4)


def _pack_q3_scales(u):
    """[nb, 16] 6-bit values -> [nb, 12] bytes."""
    u = u.astype(np.int64)
    out = np.zeros((len(u), 12), dtype=np.int64)
    for i in range(16):
        out[:, i % 8] |= (u[:, i] & 0x0F) << (4 * (i // 8))
        out[:, 8 + i % 4] |= (u[:, i] >> 4) << (2 * (i // 4))
    return out.astype(np.uint8)


def _k4_scales(b):
    """Q4_K / Q5_K: [nb, 12] bytes -> ([nb, 8] scales, [nb, 8] mins)."""
    b = b.astype(np.int64)
    sc = np.concatenate([b[:, 0:4] & 63, (b[:, 8:12] & 0x0F) | ((b[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([b[:, 4:8] & 63, (b[:, 8:12] >> 4) | ((b[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _pack_k4_scales(sc, m):
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    out = np.zeros((len(sc), 12), dtype=np.uint8)
    out[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return out


def _q5_k_values(b):
    qs = b["qs"].reshape(len(b), 4, 1, 32)
    low = np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(len(b), 8, 32).astype(np.int64)
    high = (b["qh"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    return low | (high.astype(np.int64) << 4)                       # [nb, 8, 32]


# --- decoders ---------------------------------------------------------------------------------

def decode(buf, dtype, n=None):
    """float32 values of the blocks in buf (n values: all of buf when None), as ggml computes."""
    per, size = BLOCK[dtype]
    nb = len(buf) // size if n is None else n // per
    b = np.frombuffer(buf, dtype=_DT[dtype], count=nb)
    if dtype == "Q5_0":
        v = _f32(b["d"])[:, None] * _f32(_q5_values(b) - 16)
    elif dtype == "Q5_1":
        v = _f32(b["d"])[:, None] * _f32(_q5_values(b)) + _f32(b["m"])[:, None]
    elif dtype == "IQ4_NL":
        v = _f32(b["d"])[:, None] * _f32(KVALUES[_nibbles(b["qs"])])
    elif dtype == "Q5_K":
        sc, m = _k4_scales(b["scales"])
        step = _f32(b["d"])[:, None] * _f32(sc)
        offset = _f32(b["dmin"])[:, None] * _f32(m)
        v = step[:, :, None] * _f32(_q5_k_values(b)) - offset[:, :, None]
    elif dtype == "Q3_K":
        q = _two_bits(b["qs"]) - 4 * (1 - _q3_high(b["hmask"]))
        step = _f32(b["d"])[:, None] * _f32(_q3_scales(b["scales"]) - 32)
        v = step[:, :, None] * _f32(q).reshape(nb, 16, 16)
    elif dtype == "Q2_K":
        step = _f32(b["d"])[:, None] * _f32(b["scales"] & 0x0F)
        offset = _f32(b["dmin"])[:, None] * _f32(b["scales"] >> 4)
        v = step[:, :, None] * _f32(_two_bits(b["qs"])).reshape(nb, 16, 16) - offset[:, :, None]
    else:
        raise ValueError(dtype)
    return np.asarray(v, dtype=np.float32).reshape(-1)


# --- encoders ---------------------------------------------------------------------------------

def _rows(x, per):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % per:
        raise ValueError(f"row length {x.shape[-1]} is not a multiple of {per}")
    return x.reshape(-1, per)


def _signed_extreme(b):
    idx = np.abs(b).argmax(axis=-1)
    return np.take_along_axis(b, idx[..., None], axis=-1)[..., 0]


def _encode_q5(x, with_min):
    b = _rows(x, QK)
    out = np.zeros(len(b), dtype=_DT["Q5_1" if with_min else "Q5_0"])
    if with_min:
        lo = b.min(axis=1)
        d = ((b.max(axis=1) - lo) / np.float32(31)).astype(np.float16)
        out["m"] = lo.astype(np.float16)
        lo = _f32(out["m"])
        q = np.clip(np.round((b - lo[:, None]) * _inv(_f32(d))[:, None]), 0, 31)
    else:
        d = (_signed_extreme(b) / np.float32(-16)).astype(np.float16)
        q = np.clip(np.round(b * _inv(_f32(d))[:, None]) + 16, 0, 31)
    out["d"] = d
    _q5_pack(out, q.astype(np.int64))
    return out.tobytes()


def _encode_iq4_nl(x):
    b = _rows(x, QK)
    d = (_signed_extreme(b) / np.float32(-127)).astype(np.float16)
    t = b * _inv(_f32(d))[:, None]
    idx = np.abs(t[:, :, None] - KVALUES.astype(np.float32)[None, None, :]).argmin(axis=2)
    out = np.zeros(len(b), dtype=_DT["IQ4_NL"])
    out["d"] = d
    out["qs"] = _pack_nibbles(idx)
    return out.tobytes()


def _min_scale(sub, levels):
    """Per sub-block: min mn = min(0, min x) and step (max - mn) / levels."""
    mn = np.minimum(sub.min(axis=2), 0.0)
    return mn, (sub.max(axis=2) - mn) / np.float32(levels)


def _encode_q5_k(x):
    b = _rows(x, QK_K)
    sub = b.reshape(len(b), 8, 32)
    mn, scale = _min_scale(sub, 31)
    d = (scale.max(axis=1) / np.float32(63)).astype(np.float16)
    dmin = ((-mn).max(axis=1) / np.float32(63)).astype(np.float16)
    sc = np.clip(np.round(scale * _inv(_f32(d))[:, None]), 0, 63)
    m = np.clip(np.round(-mn * _inv(_f32(dmin))[:, None]), 0, 63)
    step = _f32(d)[:, None] * _f32(sc)
    offset = _f32(dmin)[:, None] * _f32(m)
    q = np.clip(np.round((sub + offset[:, :, None]) * _inv(step)[:, :, None]), 0, 31).astype(np.uint8)
    low = (q & 0x0F).reshape(len(b), 4, 2, 32)
    out = np.zeros(len(b), dtype=_DT["Q5_K"])
    out["d"], out["dmin"] = d, dmin
    out["scales"] = _pack_k4_scales(sc, m)
    out["qs"] = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(len(b), 128)
    out["qh"] = ((q >> 4) << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1).astype(np.uint8)
    return out.tobytes()


def _encode_q3_k(x):
    """Sub-block of 16: its signed extreme maps to q = -4 (step = extreme / -4); d puts the
    largest |step| on 32 (s = -32..31)."""
    b = _rows(x, QK_K)
    sub = b.reshape(len(b), 16, 16)
    scale = _signed_extreme(sub) / np.float32(-4)
    d = (np.abs(scale).max(axis=1) / np.float32(32)).astype(np.float16)
    s = np.clip(np.round(scale * _inv(_f32(d))[:, None]), -32, 31)
    step = _f32(d)[:, None] * _f32(s)
    q = np.clip(np.round(sub * _inv(step)[:, :, None]), -4, 3).astype(np.int64).reshape(len(b), 256)
    out = np.zeros(len(b), dtype=_DT["Q3_K"])
    out["d"] = d
    out["scales"] = _pack_q3_scales(s.astype(np.int64) + 32)
    out["qs"] = _pack_two_bits(q & 3)
    out["hmask"] = _pack_q3_high(q >= 0)
    return out.tobytes()


def _encode_q2_k(x):
    b = _rows(x, QK_K)
    sub = b.reshape(len(b), 16, 16)
    mn, scale = _min_scale(sub, 3)
    d = (scale.max(axis=1) / np.float32(15)).astype(np.float16)
    dmin = ((-mn).max(axis=1) / np.float32(15)).astype(np.float16)
    sc = np.clip(np.round(scale * _inv(_f32(d))[:, None]), 0, 15)
    m = np.clip(np.round(-mn * _inv(_f32(dmin))[:, None]), 0, 15)
    step = _f32(d)[:, None] * _f32(sc)
    offset = _f32(dmin)[:, None] * _f32(m)
    q = np.clip(np.round((sub + offset[:, :, None]) * _inv(step)[:, :, None]), 0, 3)
    out = np.zeros(len(b), dtype=_DT["Q2_K"])
    out["d"], out["dmin"] = d, dmin
    out["scales"] = (sc.astype(np.uint8) | (m.astype(np.uint8) << 4))
    out["qs"] = _pack_two_bits(q.reshape(len(b), 256))
    return out.tobytes()


def encode(x, dtype):
    """Bytes of x (rows along the last axis, a multiple of the block's values) as dtype."""
    if dtype in ("Q5_0", "Q5_1"):
        return _encode_q5(x, dtype == "Q5_1")
    return {"IQ4_NL": _encode_iq4_nl, "Q5_K": _encode_q5_k, "Q3_K": _encode_q3_k,
            "Q2_K": _encode_q2_k}[dtype](x)


def random_blocks(rng, dtype, n_blocks):
    """Random bytes of n_blocks blocks, every fp16 finite (negative and subnormal included)."""
    size = BLOCK[dtype][1]
    b = rng.integers(0, 256, (n_blocks, size), dtype=np.uint8)
    for o in FP16_AT[dtype]:
        h = rng.integers(0, 0x10000, n_blocks, dtype=np.uint32).astype(np.uint16)
        h[(h & 0x7C00) == 0x7C00] &= 0x3FFF
        b[:, o:o + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return b.tobytes()
