"""GGUF v3 files: a writer for the exporter and a reader (metadata and F32/F16/BF16 tensors as
NumPy arrays) for the Hugging Face export and the checks. NumPy and the standard library only.

Layout: magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/values (u64-length
string key, u32 value type, value); n_tensors tensor infos (name, u32 n_dims, u64 ne[n_dims]
innermost first, u32 ggml type, u64 offset into the data section); padding to
general.alignment; the data section, each tensor at an aligned offset.
"""
import struct

import numpy as np

# metadata value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, \
    FLOAT64 = range(13)
_SCALAR = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
           FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}
# ggml tensor types this module reads and writes
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30
GGML_TYPE = {"F32": GGML_F32, "F16": GGML_F16, "BF16": GGML_BF16}
# llama.cpp's general.file_type of a file whose matrices are all F32 / F16 / BF16
FILE_TYPE = {"F32": 0, "F16": 1, "BF16": 32}
ALIGNMENT = 32


def bf16_bits(x):
    """float32 array -> uint16 bfloat16 bits, rounded to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def encode(x, dtype):
    """The bytes of float array x stored as dtype ("F32", "F16", "BF16")."""
    if dtype == "F32":
        return np.ascontiguousarray(x, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.ascontiguousarray(x, dtype=np.float32).astype("<f2").tobytes()
    if dtype == "BF16":
        return bf16_bits(x).astype("<u2").tobytes()
    raise ValueError("dtype %r" % dtype)


def decode(data, dtype, shape):
    """float32 array of shape from the bytes of a dtype tensor."""
    if dtype == "F32":
        return np.frombuffer(data, dtype="<f4").reshape(shape).astype(np.float32)
    if dtype == "F16":
        return np.frombuffer(data, dtype="<f2").reshape(shape).astype(np.float32)
    if dtype == "BF16":
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    raise ValueError("dtype %r" % dtype)


def _str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _value(vtype, v):
    if vtype == STRING:
        return _str(v)
    if vtype == ARRAY:
        etype, items = v
        out = struct.pack("<IQ", etype, len(items))
        if etype == STRING:
            return out + b"".join(_str(s) for s in items)
        return out + np.asarray(items, dtype=np.dtype(_SCALAR[etype])).tobytes()
    return struct.pack(_SCALAR[vtype], v)


def write(path, metadata, tensors, alignment=ALIGNMENT):
    """metadata: [(key, value type, value)], an ARRAY value being (element type, list).
    tensors: [(name, float array in row-major shape, dtype string)]; GGUF's ne is the shape
    reversed (innermost first)."""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    kv = b"".join(_str(k) + struct.pack("<I", t) + _value(t, v) for k, t, v in metadata)
    infos, blobs, offset = [], [], 0
    for name, arr, dtype in tensors:
        offset = -(-offset // alignment) * alignment
        ne = list(reversed(arr.shape))
        infos.append(_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
                     + struct.pack("<IQ", GGML_TYPE[dtype], offset))
        data = encode(arr, dtype)
        blobs.append((offset, data))
        offset += len(data)
    blob = head + kv + b"".join(infos)
    data_start = -(-len(blob) // alignment) * alignment
    with open(path, "wb") as fh:
        fh.write(blob)
        fh.write(b"\0" * (data_start - len(blob)))
        pos = 0
        for off, data in blobs:
            fh.write(b"\0" * (off - pos))
            fh.write(data)
            pos = off + len(data)


class GGUF:
    """A GGUF file read whole: .meta {key: value}, .tensors {name: (dtype, shape, bytes)}."""

    def __init__(self, path):
        with open(path, "rb") as fh:
            data = fh.read()
        self.path = path
        self.pos = 0
        if data[:4] != b"GGUF":
            raise ValueError("%s: not a GGUF file" % path)
        self.pos = 4
        self.data = data
        version = self._take("<I")
        if version not in (2, 3):
            raise ValueError("%s: GGUF version %d" % (path, version))
        n_tensors, n_kv = self._take("<Q"), self._take("<Q")
        self.meta = {}
        self.types = {}
        for _ in range(n_kv):
            key = self._string()
            vtype = self._take("<I")
            self.types[key] = vtype
            self.meta[key] = self._value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            nd = self._take("<I")
            ne = [self._take("<Q") for _ in range(nd)]
            ttype, off = self._take("<I"), self._take("<Q")
            infos.append((name, ne, ttype, off))
        alignment = self.meta.get("general.alignment", ALIGNMENT)
        start = -(-self.pos // alignment) * alignment
        by_id = {v: k for k, v in GGML_TYPE.items()}
        self.tensors = {}
        for name, ne, ttype, off in infos:
            if ttype not in by_id:
                raise ValueError("%s: tensor %s has ggml type %d (only F32/F16/BF16 are read)"
                                 % (path, name, ttype))
            dtype = by_id[ttype]
            shape = tuple(reversed(ne))
            n = int(np.prod(shape)) * (4 if dtype == "F32" else 2)
            self.tensors[name] = (dtype, shape, data[start + off:start + off + n])

    def _take(self, fmt):
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def _string(self):
        n = self._take("<Q")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="surrogateescape")

    def _value(self, vtype):
        if vtype == STRING:
            return self._string()
        if vtype == ARRAY:
            etype = self._take("<I")
            n = self._take("<Q")
            if etype in _SCALAR:
                fmt = np.dtype(_SCALAR[etype])
                arr = np.frombuffer(self.data, dtype=fmt, count=n, offset=self.pos)
                self.pos += n * fmt.itemsize
                return arr.tolist()
            return [self._value(etype) for _ in range(n)]
        return self._take(_SCALAR[vtype])

    def tensor(self, name):
        """float32 array of the stored values."""
        dtype, shape, data = self.tensors[name]
        return decode(data, dtype, shape)
