#include "unicode.h"

#include <string.h>

uint8_t unicode_flags(uint32_t cp)
{
    if (cp > 0x10FFFF) return UNICODE_OTHER;
    /* Last range whose first <= cp; ranges[0].first is 0. */
    size_t lo = 0, hi = unicode_ranges_n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (unicode_ranges[mid].first <= cp) lo = mid;
        else hi = mid;
    }
    return unicode_ranges[lo].flags;
}

utf8_class unicode_utf8_classify(const unsigned char *s, size_t n, uint32_t *cp, size_t *len)
{
    unsigned char b = s[0];
    size_t need;
    unsigned char lo2 = 0x80, hi2 = 0xBF; /* allowed range of the second byte (Table 3-7) */
    uint32_t c;
    if (b < 0x80) {
        *cp = b;
        *len = 1;
        return UTF8_VALID;
    } else if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
        c = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        c = b & 0x0F;
        if (b == 0xE0) lo2 = 0xA0;      /* no overlong forms */
        else if (b == 0xED) hi2 = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        c = b & 0x07;
        if (b == 0xF0) lo2 = 0x90;
        else if (b == 0xF4) hi2 = 0x8F; /* nothing above U+10FFFF */
    } else {
        *len = 1;
        return UTF8_INVALID;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = n;
            return UTF8_INCOMPLETE;
        }
        unsigned char lo = i == 1 ? lo2 : 0x80, hi = i == 1 ? hi2 : 0xBF;
        if (s[i] < lo || s[i] > hi) {
            *len = i;
            return UTF8_INVALID;
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *cp = c;
    *len = need;
    return UTF8_VALID;
}

size_t unicode_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    if (unicode_utf8_classify(s, n, cp, &len) == UTF8_VALID) return len;
    *cp = UNICODE_BAD;
    return 1;
}

size_t unicode_utf8_scrub(const unsigned char *in, size_t n, unsigned flags, char *out, size_t *used)
{
    static const char replacement[3] = { '\xEF', '\xBF', '\xBD' }; /* U+FFFD */
    size_t i = 0, k = 0;
    while (i < n) {
        uint32_t cp;
        size_t l;
        utf8_class c = unicode_utf8_classify(in + i, n - i, &cp, &l);
        if (c == UTF8_INCOMPLETE && (flags & UTF8_SCRUB_HOLD_INCOMPLETE)) break;
        if (c == UTF8_VALID && (cp != 0 || !(flags & UTF8_SCRUB_NUL))) {
            if (out) memcpy(out + k, in + i, l);
            k += l;
        } else {
            if (out) memcpy(out + k, replacement, sizeof replacement);
            k += sizeof replacement;
        }
        i += l;
    }
    *used = i;
    return k;
}

size_t unicode_utf8_encode(uint32_t cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2 keeps the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF as themselves and moves
 * the other 68 bytes, in order, to U+0100..U+0143, so that every byte becomes a visible
 * character and BPE never sees whitespace or controls. */
uint32_t unicode_byte_to_cp(uint8_t b)
{
    if (b <= 0x20) return 0x100u + b;                     /* 33 bytes: 0x100..0x120 */
    if (b >= 0x7F && b <= 0xA0) return 0x121u + (b - 0x7Fu); /* 34 bytes: 0x121..0x142 */
    if (b == 0xAD) return 0x143;
    return b;
}

int unicode_cp_to_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x120) return (int)(cp - 0x100);
    if (cp >= 0x121 && cp <= 0x142) return (int)(cp - 0x121 + 0x7F);
    if (cp == 0x143) return 0xAD;
    return -1;
}
