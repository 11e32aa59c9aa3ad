/* Element types of weights and activations, and the scalar conversions between them.
 *
 * Block formats follow GGUF's layout byte for byte so that GGUF tensors can be used in place:
 *   Q8_0: 32 values, { fp16 d; int8 q[32]; }           value = d * q
 *   Q4_0: 32 values, { fp16 d; uint8 qs[16]; }         value = d * (nibble - 8)
 *   Q4_1: 32 values, { fp16 d; fp16 m; uint8 qs[16]; } value = d * nibble + m
 * In Q4_0/Q4_1, byte j holds value j in its low nibble and value j + 16 in its high nibble.
 *
 * Plain integers (values without their scales; see weight.h for how scales go with them):
 *   I8:  int8 per value;  I32: int32 per value;
 *   U4:  2 values per byte, value 2j in the low nibble of byte j, value 2j + 1 in the high one,
 *        unsigned 0..15 (a block of 2 values in 1 byte).
 *
 * K-quants (ggml's super-blocks of 256 values):
 *   Q4_K: { fp16 d; fp16 dmin; uint8 scales[12]; uint8 qs[128]; }            144 bytes
 *         sub-block j (values 32j..32j+31) has 6-bit sc_j and m_j (ifn_q4_k_scale_min);
 *         value = (d * sc_j) * q - dmin * m_j, q a nibble: 64 values 64c..64c+63 share
 *         qs[32c..32c+31], the first 32 in the low nibbles, the next 32 in the high ones.
 *   Q6_K: { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; fp16 d; }        210 bytes
 *         value v = d * scales[v / 16] * (q - 32), q 6 bits: in each half h (128 values,
 *         ql[64h..], qh[32h..]) value 32k + l (k = 0..3, l = 0..31) has its low 4 bits in
 *         ql[64h + l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2) and its high 2
 *         bits in qh[32h + l] at bit 2k.
 *   Q5_K: { fp16 d; fp16 dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]; }  176 bytes
 *         as Q4_K (same scales, same nibbles) with a fifth bit: value 32j + l has 16 added
 *         to q when bit j of qh[l] is set; value = (d * sc_j) * q - dmin * m_j, q 0..31.
 *   Q3_K: { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; fp16 d; }          110 bytes
 *         value v = (d * s) * q with s = scale[v / 16] - 32 (6 bits: ifn_q3_k_scale) and
 *         q = (2 bits) - 4 * (high bit clear), -4..3: in each half h (128 values, qs[32h..])
 *         value 32k + l (k = 0..3, l = 0..31) has its 2 bits at bit 2k of qs[32h + l] and its
 *         high bit at bit 4h + k of hmask[l].
 *   Q2_K: { uint8 scales[16]; uint8 qs[64]; fp16 d; fp16 dmin; }                84 bytes
 *         value v = (d * sc) * q - dmin * m, sc and m the low and high nibbles of
 *         scales[v / 16], q 0..3 placed as Q3_K's 2 bits.
 *
 * Other 32-value blocks:
 *   Q5_0: { fp16 d; uint8 qh[4]; uint8 qs[16]; }          value = d * (q - 16)
 *   Q5_1: { fp16 d; fp16 m; uint8 qh[4]; uint8 qs[16]; }  value = d * q + m
 *         q of 5 bits: its low 4 as Q4_0's nibbles, its fifth bit of value j at bit j of the
 *         little-endian uint32 qh.
 *   IQ4_NL: { fp16 d; uint8 qs[16]; }  value = d * kvalues[nibble], nibbles as in Q4_0,
 *         kvalues the fixed non-uniform table ifn_iq4_nl_values. */
#ifndef IFN_DTYPE_H
#define IFN_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    IFN_DTYPE_F32 = 0,
    IFN_DTYPE_F16,
    IFN_DTYPE_BF16,
    IFN_DTYPE_Q8_0,
    IFN_DTYPE_Q4_0,
    IFN_DTYPE_Q4_1,
    IFN_DTYPE_I8,
    IFN_DTYPE_U4,
    IFN_DTYPE_I32,
    IFN_DTYPE_Q4_K,
    IFN_DTYPE_Q6_K,
    IFN_DTYPE_Q5_0,
    IFN_DTYPE_Q5_1,
    IFN_DTYPE_Q5_K,
    IFN_DTYPE_Q3_K,
    IFN_DTYPE_Q2_K,
    IFN_DTYPE_IQ4_NL,
    IFN_DTYPE_COUNT
} ifn_dtype;

/* "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "i8", "u4", "i32", "q4_k", "q6_k", "q5_0",
 * "q5_1", "q5_k", "q3_k", "q2_k", "iq4_nl". */
const char *ifn_dtype_name(ifn_dtype t);

/* Values per block (1 for plain types) and bytes per block. */
int ifn_dtype_block_size(ifn_dtype t);
size_t ifn_dtype_block_bytes(ifn_dtype t);

/* Bytes of a row of n values; n must be a multiple of the block size (0 otherwise). */
size_t ifn_dtype_row_bytes(ifn_dtype t, int64_t n);

/* Converts n values of a row of type t (n a multiple of the block size) to fp32 (integers as
 * they are, without scales). */
void ifn_dtype_to_f32(ifn_dtype t, const void *src, float *dst, int64_t n);

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block, from its 12 packed
 * scale bytes: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 in the nibbles of byte
 * j + 4 (scale low, min high) with their top 2 bits in the top bits of bytes j - 4 and j. */
void ifn_q4_k_scale_min(const uint8_t *scales, int j, int *sc, int *m);

/* The 6-bit scale (0..63, before subtracting 32) of sub-block i (0..15) of a Q3_K
 * super-block, from its 12 packed scale bytes: the low 4 bits in byte i % 8 (low nibble for
 * i < 8, high for i >= 8), the top 2 at bit 2 * (i / 4) of byte 8 + i % 4. */
int ifn_q3_k_scale(const uint8_t *scales, int i);

/* IQ4_NL's 16 values, indexed by nibble. */
extern const int8_t ifn_iq4_nl_values[16];

/* Whether every value of type t is exactly an int8 times one fp32 scale per 32 values
 * (Q8_0, Q5_0, IQ4_NL, Q3_K), so that W8 g32 holds it without loss. */
int ifn_dtype_is_w8_exact(ifn_dtype t);

/* For such a type: q [n] int8 values and scales [n / 32] with value k = scales[k / 32] * q[k]
 * exactly (n a multiple of the block size). Zero values may differ from ifn_dtype_to_f32's in
 * sign only. */
void ifn_dtype_to_w8(ifn_dtype t, const void *src, int8_t *q, float *scales, int64_t n);

float ifn_fp16_to_f32(uint16_t h);
uint16_t ifn_f32_to_fp16(float f);

static inline float ifn_bf16_to_f32(uint16_t b)
{
    union { uint32_t u; float f; } v = { .u = (uint32_t)b << 16 };
    return v.f;
}

/* Round to nearest even; NaN stays NaN. */
static inline uint16_t ifn_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = { .f = f };
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

#endif
