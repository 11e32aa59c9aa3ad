/* Streaming detokenizer. A token may end in the middle of a UTF-8 character (byte tokens,
 * byte-level BPE pieces of an emoji), so the bytes of an unfinished character are held back
 * until a later token completes them. Bytes that can never form a character become U+FFFD,
 * one per maximal invalid subpart as Unicode recommends. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "unicode.h"

struct detok_stream {
    const tokenizer *t;
    bool render_special;
    bool at_start;            /* no text yielded yet (for the "▁" prefix's space) */
    unsigned char pending[4]; /* a valid but unfinished UTF-8 sequence, at most 3 bytes */
    size_t n_pending;
    unsigned char *buf;       /* pending + the current piece */
    size_t buf_cap;
};

static const unsigned char REPLACEMENT[3] = {0xEF, 0xBF, 0xBD};

ifn_status detok_stream_create(const tokenizer *t, bool render_special, detok_stream **out)
{
    if (!t || !out) return ifn_error_set(IFN_ERR_INVALID_ARG, "detok_stream_create: NULL argument");
    *out = NULL;
    detok_stream *s = calloc(1, sizeof *s);
    if (!s) return ifn_error_set(IFN_ERR_NOMEM, "detok_stream_create: out of memory");
    s->buf_cap = t->max_piece_len + sizeof s->pending;
    s->buf = malloc(s->buf_cap);
    if (!s->buf) {
        free(s);
        return ifn_error_set(IFN_ERR_NOMEM, "detok_stream_create: out of memory");
    }
    s->t = t;
    s->render_special = render_special;
    s->at_start = true;
    *out = s;
    return IFN_OK;
}

ifn_status detok_stream_follow(detok_stream *s, const int32_t *ids, size_t n_ids)
{
    if (!s || (!ids && n_ids > 0)) return ifn_error_set(IFN_ERR_INVALID_ARG, "detok_stream_follow: NULL argument");
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i] < 0 || ids[i] >= s->t->n_vocab)
            return ifn_error_set(IFN_ERR_RANGE, "detok_stream_follow: ids[%zu] = %d is outside the vocabulary (%d "
                                 "tokens)", i, ids[i], s->t->n_vocab);
        if (!s->at_start) continue;
        const char *p;
        size_t n;
        bool special;
        tok_render(s->t, ids[i], s->render_special, &p, &n, &special);
        tok_strip_space(s->t, &s->at_start, special, &p, &n);
    }
    return IFN_OK;
}

void detok_stream_destroy(detok_stream *s)
{
    if (!s) return;
    free(s->buf);
    free(s);
}

ifn_status detok_stream_push(detok_stream *s, int32_t id, char *out, size_t cap, size_t *n_out)
{
    if (!s || !n_out || (!out && cap > 0))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "detok_stream_push: NULL argument");
    *n_out = 0;
    const tokenizer *t = s->t;
    if (id < 0 || id >= t->n_vocab)
        return ifn_error_set(IFN_ERR_RANGE,
                             "detok_stream_push: id %d is outside the vocabulary (%d tokens)", id,
                             t->n_vocab);
    const char *p;
    size_t n;
    bool special, at_start = s->at_start;
    tok_render(t, id, s->render_special, &p, &n, &special);
    tok_strip_space(t, &at_start, special, &p, &n);

    memcpy(s->buf, s->pending, s->n_pending);
    if (n) memcpy(s->buf + s->n_pending, p, n);
    size_t total = s->n_pending + n, used;
    size_t need = unicode_utf8_scrub(s->buf, total, UTF8_SCRUB_HOLD_INCOMPLETE, NULL, &used);
    if (need > cap)
        return ifn_error_set(IFN_ERR_RANGE,
                             "detok_stream_push: token %d needs %zu bytes of output, %zu given",
                             id, need, cap);
    *n_out = unicode_utf8_scrub(s->buf, total, UTF8_SCRUB_HOLD_INCOMPLETE, out, &used);
    s->n_pending = total - used;
    memcpy(s->pending, s->buf + used, s->n_pending);
    s->at_start = at_start;
    return IFN_OK;
}

ifn_status detok_stream_finish(detok_stream *s, char *out, size_t cap, size_t *n_out)
{
    if (!s || !n_out || (!out && cap > 0))
        return ifn_error_set(IFN_ERR_INVALID_ARG, "detok_stream_finish: NULL argument");
    *n_out = 0;
    if (s->n_pending == 0) return IFN_OK;
    /* What is pending is one unfinished sequence: one maximal subpart, one U+FFFD. */
    if (cap < sizeof REPLACEMENT)
        return ifn_error_set(IFN_ERR_RANGE, "detok_stream_finish: needs %zu bytes of output, "
                             "%zu given", sizeof REPLACEMENT, cap);
    memcpy(out, REPLACEMENT, sizeof REPLACEMENT);
    *n_out = sizeof REPLACEMENT;
    s->n_pending = 0;
    return IFN_OK;
}
