/* The little Unicode the tokenizers need: UTF-8 decoding that never fails (a byte that does
 * not start a valid sequence stands for itself), the character classes of the pre-tokenizer
 * regexes (\p{L}, \p{N}, \s) from the generated unicode_data.c, and GPT-2's byte <-> code
 * point map of byte-level BPE. */
#ifndef IFN_UNICODE_H
#define IFN_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Flags of a code point: exactly one major general category, plus UNICODE_WHITESPACE for the
 * White_Space property. The values are written into unicode_data.c by
 * tools/dev/gen_unicode_tables.py; keep the two in step. */
enum {
    UNICODE_LETTER = 0x01,     /* L* */
    UNICODE_NUMBER = 0x02,     /* N* */
    UNICODE_PUNCT = 0x04,      /* P* */
    UNICODE_SYMBOL = 0x08,     /* S* */
    UNICODE_MARK = 0x10,       /* M* */
    UNICODE_SEPARATOR = 0x20,  /* Z* */
    UNICODE_OTHER = 0x40,      /* C* (controls, unassigned, private use, surrogates) */
    UNICODE_WHITESPACE = 0x80, /* White_Space */
};

typedef struct {
    uint32_t first; /* the range runs up to the next entry's first (or U+10FFFF) */
    uint8_t flags;
} unicode_range;

extern const unicode_range unicode_ranges[];
extern const size_t unicode_ranges_n;
extern const char unicode_data_version[];

/* Flags of code point cp; UNICODE_OTHER for values above U+10FFFF. */
uint8_t unicode_flags(uint32_t cp);

/* Classifies the UTF-8 sequence starting at s[0] (n > 0 bytes available):
 *   UTF8_VALID      a whole valid sequence of *len bytes encoding *cp;
 *   UTF8_INCOMPLETE s[0..n) is a valid start of a longer sequence (*len = n);
 *   UTF8_INVALID    s[0..*len) is the maximal subpart that can never become valid (Unicode's
 *                   "maximal subpart" rule: replace it by one U+FFFD). */
typedef enum { UTF8_VALID, UTF8_INCOMPLETE, UTF8_INVALID } utf8_class;
utf8_class unicode_utf8_classify(const unsigned char *s, size_t n, uint32_t *cp, size_t *len);

/* Length of the "character" starting at s[0] (n > 0): a valid sequence, or 1 for a byte that
 * does not start one (then *cp = UNICODE_BAD, classed as UNICODE_OTHER). Every byte string so
 * splits into characters, which is how invalid UTF-8 ends up encoded as its bytes. */
#define UNICODE_BAD 0xFFFFFFFFu
size_t unicode_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

/* Copies in[0..n) to out as valid UTF-8: every maximal invalid subpart becomes one U+FFFD
 * (EF BF BD). Flags: UTF8_SCRUB_HOLD_INCOMPLETE leaves out an unfinished sequence at the end (a
 * stream waiting for more bytes; without it the sequence becomes one U+FFFD); UTF8_SCRUB_NUL
 * makes NUL bytes U+FFFD too (for a C string: protobuf-c's string fields end at a NUL). out may
 * be NULL to count; it needs at most 3 * n bytes. Returns the bytes written; *used = the bytes
 * of in consumed. */
enum { UTF8_SCRUB_HOLD_INCOMPLETE = 1, UTF8_SCRUB_NUL = 2 };
size_t unicode_utf8_scrub(const unsigned char *in, size_t n, unsigned flags, char *out, size_t *used);

/* Writes cp (at most U+10FFFF) as UTF-8 into out (4 bytes of room); returns the length. */
size_t unicode_utf8_encode(uint32_t cp, unsigned char *out);

/* GPT-2's reversible map of bytes to printable code points. */
uint32_t unicode_byte_to_cp(uint8_t b);
/* The byte for code point cp, or -1 if cp is not in the image of the map. */
int unicode_cp_to_byte(uint32_t cp);

#endif
