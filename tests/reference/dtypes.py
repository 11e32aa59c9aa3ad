"""Weight encodings shared by the writers: fp16, bf16 and the GGUF block formats.

Every encoder returns the bytes to store; every decoder turns those bytes back into the exact
values a reader sees. The writers round-trip each tensor through its encoding so that the
reference computes with precisely the values in the file.

Block formats (GGUF layout, 32 values per block, little-endian):
  Q8_0 { fp16 d; int8 q[32]; }            value = d * q
  Q4_0 { fp16 d; uint8 qs[16]; }          value = d * (nibble - 8)
  Q4_1 { fp16 d; fp16 m; uint8 qs[16]; }  value = d * nibble + m
In Q4_0/Q4_1 byte j holds value j in its low nibble and value j + 16 in its high nibble.
"""
import numpy as np

QK = 32

# ggml type ids as written in GGUF tensor infos.
GGML_TYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 8, "BF16": 30}

_Q8_0 = np.dtype([("d", "<f2"), ("q", "i1", (QK,))])
_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
_Q4_1 = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", (QK // 2,))])


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
    else:
        raise ValueError(f"unknown dtype {dtype}")
    return np.asarray(v, dtype=np.float64).reshape(shape)


def roundtrip(x, dtype):
    """The values a reader sees after x is stored as dtype."""
    return decode(encode(x, dtype), dtype, np.shape(x))
