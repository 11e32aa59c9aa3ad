/* Small synthetic vocabularies written as GGUF files, for tests that must not depend on the
 * shared folder. */
#ifndef IFN_TOK_FIXTURES_H
#define IFN_TOK_FIXTURES_H

#include "gguf_writer_test.h"
#include "unicode.h"

/* SentencePiece-style: <unk> <s> </s>, the 256 byte tokens, then a few pieces. */
enum {
    SPM_UNK = 0,
    SPM_BOS = 1,
    SPM_EOS = 2,
    SPM_BYTE0 = 3, /* <0x00> .. <0xFF> are 3 .. 258 */
    SPM_META = 259, /* "▁" */
    SPM_A,          /* "a" */
    SPM_B,          /* "b" */
    SPM_META_A,     /* "▁a" */
    SPM_AB,         /* "ab" */
    SPM_META_AB,    /* "▁ab" */
    SPM_TOOL,       /* "<tool>", user-defined */
    SPM_N
};

static inline const char *spm_piece(int id, char *buf)
{
    static const char *const named[] = {"<unk>", "<s>", "</s>"};
    static const char *const pieces[] = {"\xE2\x96\x81", "a", "b", "\xE2\x96\x81" "a", "ab",
                                         "\xE2\x96\x81" "ab", "<tool>"};
    if (id < SPM_BYTE0) return named[id];
    if (id < SPM_META) {
        snprintf(buf, 8, "<0x%02X>", id - SPM_BYTE0);
        return buf;
    }
    return pieces[id - SPM_META];
}

/* Adds the SPM vocabulary keys; `skip` names a key to leave out (NULL: none). */
static inline void fixture_spm_keys(gguf_writer *w, const char *skip)
{
    static char bytes[256][8];
    const char *toks[SPM_N];
    float scores[SPM_N];
    int32_t types[SPM_N];
    for (int i = 0; i < SPM_N; i++) {
        toks[i] = spm_piece(i, i >= SPM_BYTE0 && i < SPM_META ? bytes[i - SPM_BYTE0] : NULL);
        scores[i] = 0.0f;
        types[i] = i == SPM_UNK ? 2 : i < SPM_BYTE0 ? 3 : i < SPM_META ? 6 : 1;
    }
    types[SPM_TOOL] = 4;
    scores[SPM_META] = -1.0f;
    scores[SPM_META_A] = -2.0f;
    scores[SPM_AB] = -3.0f;
    scores[SPM_META_AB] = -1.5f;
    gw_str(w, "tokenizer.ggml.model", "llama");
    if (!skip || strcmp(skip, "tokens") != 0) gw_arr_str(w, "tokenizer.ggml.tokens", toks, SPM_N);
    if (!skip || strcmp(skip, "scores") != 0) gw_arr_f32(w, "tokenizer.ggml.scores", scores, SPM_N);
    if (!skip || strcmp(skip, "token_type") != 0)
        gw_arr_i32(w, "tokenizer.ggml.token_type", types, SPM_N);
    if (!skip || strcmp(skip, "bos") != 0) gw_u32(w, "tokenizer.ggml.bos_token_id", SPM_BOS);
    gw_u32(w, "tokenizer.ggml.eos_token_id", SPM_EOS);
    gw_u32(w, "tokenizer.ggml.unknown_token_id", SPM_UNK);
}

/* Byte-level: the 256 GPT-2 stand-ins for bytes (id = byte), then merged pieces and
 * special tokens. */
enum {
    BL_HE = 256, /* "he" */
    BL_LL,       /* "ll" */
    BL_HELL,     /* "hell" */
    BL_SPACE_W,  /* "Ġw" */
    BL_EOT,      /* "<|endoftext|>", control */
    BL_IM_START, /* "<|im_start|>", control */
    BL_IM,       /* "<|im", control (a prefix of the one above) */
    BL_TOOL,     /* "<tool>", user-defined */
    BL_LO,       /* "lo": no merge makes it, only Llama-3's ignore_merges */
    BL_N
};

static inline void fixture_bytelevel_keys(gguf_writer *w, const char *pre)
{
    static char bytes[256][4];
    const char *toks[BL_N];
    int32_t types[BL_N];
    for (int b = 0; b < 256; b++) {
        size_t n = unicode_utf8_encode(unicode_byte_to_cp((uint8_t)b), (unsigned char *)bytes[b]);
        bytes[b][n] = '\0';
        toks[b] = bytes[b];
        types[b] = 1;
    }
    toks[BL_HE] = "he";
    toks[BL_LL] = "ll";
    toks[BL_HELL] = "hell";
    toks[BL_SPACE_W] = "\xC4\xA0w";
    toks[BL_EOT] = "<|endoftext|>";
    toks[BL_IM_START] = "<|im_start|>";
    toks[BL_IM] = "<|im";
    toks[BL_TOOL] = "<tool>";
    toks[BL_LO] = "lo";
    for (int i = BL_HE; i < BL_N; i++) types[i] = 1;
    types[BL_EOT] = types[BL_IM_START] = types[BL_IM] = 3;
    types[BL_TOOL] = 4;
    static const char *const merges[] = {"h e", "l l", "he ll", "\xC4\xA0 w"};
    gw_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre) gw_str(w, "tokenizer.ggml.pre", pre);
    gw_arr_str(w, "tokenizer.ggml.tokens", toks, BL_N);
    gw_arr_i32(w, "tokenizer.ggml.token_type", types, BL_N);
    gw_arr_str(w, "tokenizer.ggml.merges", merges, 4);
    gw_u32(w, "tokenizer.ggml.bos_token_id", BL_EOT);
    gw_u32(w, "tokenizer.ggml.eos_token_id", BL_EOT);
}

#endif
