/* Test driver: runs a plan of batched steps through the engine (on every rank of an mpirun,
 * or alone) and writes what rank 0 got back, for run_engine_batch.py to compare with the NumPy
 * reference run on each sequence alone.
 *
 *   engine_batch_dump MODEL PLAN OUT
 *
 * PLAN, one command per line (tokens are ids; MODE is none|argmax|topk|full):
 *   engine N_SLOTS CTX_SIZE N_BATCH QUANT [KV]  first line; QUANT "-" keeps the stored types;
 *                                             KV is the caches' f32 (the default), f16 or bf16
 *   ring SLOT WINDOW N_KEEP                   engine_slot_ring
 *   step                                      the seq lines up to "end" are one engine_step
 *   seq SLOT DISCARD POS0 N_OUT MODE TOP_K N T1 .. TN
 *   end
 *   eval ALL_ROWS MODE TOP_K N T1 .. TN       engine_eval on slot 0 (ALL_ROWS 0|1)
 *   reset                                     engine_reset
 *   bad                                       the seq lines up to "end" are a valid step that
 *                                             every bad-step case below spoils in one field; none
 *                                             may run, each must fail with its status and a message
 *                                             naming the field, and the slots' lengths must stay
 * OUT, after "describe ...", "weights BYTES DESC" and "kv BYTES TYPE" (engine_kv_bytes):
 * per step or eval in order (K counts them from 0)
 *   row K SEQ J full V1 .. V_vocab | row K SEQ J argmax ID VALUE | row K SEQ J topk ID V ID V ..
 *   lens K L0 .. L_{n_slots-1}                engine_slot_len after it
 * per ring command in order (R counts them from 0)
 *   ring R L0 .. L_{n_slots-1}                engine_slot_len after it
 * per bad case
 *   bad NAME ok: MESSAGE                      or "bad NAME FAIL: ..." (the driver then exits 1)
 * Exit 0 when every command did what it should, 1 otherwise (the detail on stderr). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "engine.h"

#define MAX_LINE (1 << 16)

/* The driver's copy of each slot's ring (what the plan's ring commands set), for the bad
 * cases that aim just past a window. */
typedef struct {
    int window, n_keep;
} ring_conf;

typedef struct {
    int n_seqs;
    engine_seq *seqs;  /* [n_slots + 1]: room for the "more sequences than slots" case */
    int32_t **tokens;  /* [n_slots + 1][CTX_SIZE + 1] */
    /* Every sequence gets buffers for every mode, so that a bad case can switch modes. */
    float **logits;    /* [n_slots + 1][CTX_SIZE * vocab] */
    int32_t **ids;     /* [n_slots + 1][CTX_SIZE * vocab] */
    float **values;    /* [n_slots + 1][CTX_SIZE * vocab] */
} plan_step;

static bool parse_mode(const char *s, engine_logits *mode)
{
    static const char *const names[] = { "none", "argmax", "topk", "full" };
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *mode = (engine_logits)i;
            return true;
        }
    return false;
}

/* Reads "N T1 .. TN" from the rest of a line. */
static bool parse_tokens(char **save, int32_t *tokens, int cap, int *n)
{
    char *tok = strtok_r(NULL, " \t\n", save);
    if (!tok || sscanf(tok, "%d", n) != 1 || *n < 0 || *n > cap) return false;
    for (int i = 0; i < *n; i++) {
        tok = strtok_r(NULL, " \t\n", save);
        if (!tok || sscanf(tok, "%d", &tokens[i]) != 1) return false;
    }
    return true;
}

/* "seq SLOT DISCARD POS0 N_OUT MODE TOP_K N T1 .. TN" (after "seq"). */
static bool parse_seq(char **save, plan_step *st, int ctx_size)
{
    int i = st->n_seqs;
    engine_seq *s = &st->seqs[i];
    *s = (engine_seq){ 0 };
    int v[4];
    for (int k = 0; k < 4; k++) {
        char *tok = strtok_r(NULL, " \t\n", save);
        if (!tok || sscanf(tok, "%d", &v[k]) != 1) return false;
    }
    char *mode = strtok_r(NULL, " \t\n", save), *top_k = strtok_r(NULL, " \t\n", save);
    if (!mode || !top_k || !parse_mode(mode, &s->out.mode) || sscanf(top_k, "%d", &s->out.top_k) != 1) return false;
    if (!parse_tokens(save, st->tokens[i], ctx_size + 1, &s->n_tokens)) return false;
    s->slot = v[0];
    s->discard = v[1];
    s->pos0 = v[2];
    s->n_out = v[3];
    s->tokens = st->tokens[i];
    s->out.logits = st->logits[i];
    s->out.ids = st->ids[i];
    s->out.values = st->values[i];
    st->n_seqs++;
    return true;
}

static void dump_rows(FILE *out, int k, int i, const engine_output *o, int n_out, int vocab)
{
    for (int j = 0; j < n_out; j++) {
        fprintf(out, "row %d %d %d", k, i, j);
        if (o->mode == ENGINE_LOGITS_FULL) {
            fputs(" full", out);
            for (int c = 0; c < vocab; c++) fprintf(out, " %.9g", o->logits[(size_t)j * vocab + c]);
        } else if (o->mode == ENGINE_LOGITS_ARGMAX) {
            fprintf(out, " argmax %d %.9g", o->ids[j], o->values[j]);
        } else if (o->mode == ENGINE_LOGITS_TOPK) {
            fputs(" topk", out);
            for (int c = 0; c < o->top_k; c++)
                fprintf(out, " %d %.9g", o->ids[(size_t)j * o->top_k + c], o->values[(size_t)j * o->top_k + c]);
        }
        fputc('\n', out);
    }
}

static void dump_lens(FILE *out, int k, const engine *e)
{
    fprintf(out, "lens %d", k);
    for (int s = 0; s < engine_n_slots(e); s++) fprintf(out, " %d", engine_slot_len(e, s));
    fputc('\n', out);
}

/* ---------------------------------------------------------------- bad steps */

typedef enum {
    BAD_NO_SEQS, BAD_TOO_MANY_SEQS, BAD_SEQS_NULL, BAD_SLOT_BEYOND, BAD_SLOT_NEGATIVE, BAD_SLOT_TWICE,
    BAD_NO_TOKENS, BAD_TOKENS_NULL, BAD_POS0_NEGATIVE, BAD_POS0_BEYOND_LEN, BAD_PAST_WINDOW, BAD_OVER_BATCH,
    BAD_TOKEN_VOCAB, BAD_TOKEN_NEGATIVE, BAD_N_OUT_BEYOND, BAD_N_OUT_NEGATIVE, BAD_ARGMAX_NO_ROWS, BAD_NONE_ROWS,
    BAD_MODE, BAD_TOP_K_0, BAD_TOP_K_BEYOND, BAD_ARGMAX_NO_IDS, BAD_TOPK_NO_VALUES, BAD_FULL_NO_LOGITS,
    BAD_DISCARD_BEYOND, BAD_DISCARD_NEGATIVE, BAD_POS0_AFTER_DISCARD,
    BAD_EVAL_PAST_CONTEXT, BAD_EVAL_TOKEN, BAD_EVAL_ALL_ARGMAX, BAD_EVAL_TOP_K_0, BAD_EVAL_NO_TOKENS,
    BAD_RING_SLOT, BAD_RING_WINDOW_0, BAD_RING_WINDOW_BEYOND, BAD_RING_N_KEEP_WINDOW, BAD_RING_N_KEEP_NEGATIVE,
    BAD_COUNT
} bad_kind;

typedef struct {
    const char *name;
    ifn_status want;
    const char *text; /* must be in the message ("^text": must start it) */
} bad_case;

static const bad_case bad_cases[BAD_COUNT] = {
    [BAD_NO_SEQS] = { "no sequences", IFN_ERR_INVALID_ARG, "a step of 0 sequences" },
    [BAD_TOO_MANY_SEQS] = { "more sequences than slots", IFN_ERR_INVALID_ARG, "(the slots)" },
    [BAD_SEQS_NULL] = { "sequences NULL", IFN_ERR_INVALID_ARG, "without the sequences" },
    [BAD_SLOT_BEYOND] = { "slot beyond the last", IFN_ERR_RANGE, "seqs[1].slot" },
    [BAD_SLOT_NEGATIVE] = { "negative slot", IFN_ERR_RANGE, "seqs[0].slot" },
    [BAD_SLOT_TWICE] = { "slot used twice", IFN_ERR_INVALID_ARG, "seqs[1].slot" },
    [BAD_NO_TOKENS] = { "no tokens", IFN_ERR_INVALID_ARG, "seqs[1].n_tokens" },
    [BAD_TOKENS_NULL] = { "tokens NULL", IFN_ERR_INVALID_ARG, "seqs[0].tokens" },
    [BAD_POS0_NEGATIVE] = { "negative pos0", IFN_ERR_RANGE, "seqs[1].pos0" },
    [BAD_POS0_BEYOND_LEN] = { "pos0 beyond the slot's length", IFN_ERR_RANGE, "seqs[0].pos0" },
    [BAD_PAST_WINDOW] = { "past the slot's window", IFN_ERR_RANGE, "seqs[0].n_tokens" },
    [BAD_OVER_BATCH] = { "more tokens than n_batch", IFN_ERR_RANGE, "seqs[1].n_tokens" },
    [BAD_TOKEN_VOCAB] = { "token id = vocab", IFN_ERR_RANGE, "seqs[1].tokens[" },
    [BAD_TOKEN_NEGATIVE] = { "negative token id", IFN_ERR_RANGE, "seqs[0].tokens[0]" },
    [BAD_N_OUT_BEYOND] = { "n_out beyond n_tokens", IFN_ERR_RANGE, "seqs[0].n_out" },
    [BAD_N_OUT_NEGATIVE] = { "negative n_out", IFN_ERR_RANGE, "seqs[1].n_out" },
    [BAD_ARGMAX_NO_ROWS] = { "no rows with ARGMAX", IFN_ERR_INVALID_ARG, "seqs[1].n_out" },
    [BAD_NONE_ROWS] = { "rows with NONE", IFN_ERR_INVALID_ARG, "seqs[0].n_out" },
    [BAD_MODE] = { "unknown mode", IFN_ERR_INVALID_ARG, "seqs[1].out.mode" },
    [BAD_TOP_K_0] = { "top_k 0", IFN_ERR_INVALID_ARG, "seqs[1].out.top_k" },
    [BAD_TOP_K_BEYOND] = { "top_k beyond the vocabulary", IFN_ERR_INVALID_ARG, "seqs[1].out.top_k" },
    [BAD_ARGMAX_NO_IDS] = { "ARGMAX without ids", IFN_ERR_INVALID_ARG, "seqs[0].out.ids" },
    [BAD_TOPK_NO_VALUES] = { "TOPK without values", IFN_ERR_INVALID_ARG, "seqs[1].out.values" },
    [BAD_FULL_NO_LOGITS] = { "FULL without logits", IFN_ERR_INVALID_ARG, "seqs[0].out.logits" },
    [BAD_DISCARD_BEYOND] = { "discard beyond the non-sinks", IFN_ERR_RANGE, "seqs[0].discard" },
    [BAD_DISCARD_NEGATIVE] = { "negative discard", IFN_ERR_RANGE, "seqs[1].discard" },
    [BAD_POS0_AFTER_DISCARD] = { "pos0 beyond the length after the discard", IFN_ERR_RANGE, "seqs[0].pos0" },
    [BAD_EVAL_PAST_CONTEXT] = { "eval past the context", IFN_ERR_RANGE, "do not fit" },
    [BAD_EVAL_TOKEN] = { "eval token outside the vocabulary", IFN_ERR_RANGE, "outside the vocabulary" },
    [BAD_EVAL_ALL_ARGMAX] = { "eval every row of ARGMAX", IFN_ERR_INVALID_ARG, "only FULL" },
    [BAD_EVAL_TOP_K_0] = { "eval top_k 0", IFN_ERR_INVALID_ARG, "seqs[0].out.top_k" },
    [BAD_EVAL_NO_TOKENS] = { "eval no tokens", IFN_ERR_INVALID_ARG, "no tokens" },
    [BAD_RING_SLOT] = { "ring of a slot beyond the last", IFN_ERR_RANGE, "^slot " },
    [BAD_RING_WINDOW_0] = { "ring window 0", IFN_ERR_RANGE, "^window " },
    [BAD_RING_WINDOW_BEYOND] = { "ring window beyond the context", IFN_ERR_RANGE, "^window " },
    [BAD_RING_N_KEEP_WINDOW] = { "ring n_keep = window", IFN_ERR_RANGE, "^n_keep " },
    [BAD_RING_N_KEEP_NEGATIVE] = { "ring negative n_keep", IFN_ERR_RANGE, "^n_keep " },
};

/* Runs bad case c: engine_eval on slot 0, engine_slot_ring on base's first slot, or
 * engine_step on a copy of the valid step base (at least 2 sequences) spoiled in one field.
 * rings: the slots' rings; spare: [ctx + 1] valid token ids to spoil or use; spare_out:
 * buffers for every mode. */
static ifn_status run_bad(engine *e, bad_kind c, const plan_step *base, const ring_conf *rings, int32_t *spare,
                          const engine_output *spare_out)
{
    const int n_slots = engine_n_slots(e), ctx = engine_ctx_size(e), vocab = engine_config(e)->vocab_size;
    const int slot0 = base->seqs[0].slot, len0 = engine_slot_len(e, slot0);
    engine_output topk = *spare_out;
    topk.mode = ENGINE_LOGITS_TOPK;
    topk.top_k = 3;
    switch (c) { /* engine_eval: two tokens with a TOPK row, spoiled */
    case BAD_EVAL_PAST_CONTEXT: return engine_eval(e, spare, rings[0].window - engine_slot_len(e, 0) + 1, false, &topk);
    case BAD_EVAL_TOKEN: spare[1] = vocab; return engine_eval(e, spare, 2, false, &topk);
    case BAD_EVAL_ALL_ARGMAX: topk.mode = ENGINE_LOGITS_ARGMAX; return engine_eval(e, spare, 2, true, &topk);
    case BAD_EVAL_TOP_K_0: topk.top_k = 0; return engine_eval(e, spare, 2, false, &topk);
    case BAD_EVAL_NO_TOKENS: return engine_eval(e, spare, 0, false, &topk);
    case BAD_SEQS_NULL: return engine_step(e, NULL, base->n_seqs);
    case BAD_RING_SLOT: return engine_slot_ring(e, n_slots, rings[slot0].window, 0);
    case BAD_RING_WINDOW_0: return engine_slot_ring(e, slot0, 0, 0);
    case BAD_RING_WINDOW_BEYOND: return engine_slot_ring(e, slot0, ctx + 1, 0);
    case BAD_RING_N_KEEP_WINDOW: return engine_slot_ring(e, slot0, rings[slot0].window, rings[slot0].window);
    case BAD_RING_N_KEEP_NEGATIVE: return engine_slot_ring(e, slot0, rings[slot0].window, -1);
    default: break;
    }
    engine_seq s[64];
    int n = base->n_seqs, others = 0;
    memcpy(s, base->seqs, (size_t)n * sizeof *s);
    switch (c) {
    case BAD_NO_SEQS: n = 0; break;
    case BAD_TOO_MANY_SEQS:
        for (int i = n; i <= n_slots; i++) s[i] = s[0];
        n = n_slots + 1;
        break;
    case BAD_SLOT_BEYOND: s[1].slot = n_slots; break;
    case BAD_SLOT_NEGATIVE: s[0].slot = -1; break;
    case BAD_SLOT_TWICE: s[1].slot = s[0].slot; break;
    case BAD_NO_TOKENS: s[1].n_tokens = 0; break;
    case BAD_TOKENS_NULL: s[0].tokens = NULL; break;
    case BAD_POS0_NEGATIVE: s[1].pos0 = -1; break;
    case BAD_POS0_BEYOND_LEN: s[0].pos0 = len0 - s[0].discard + 1; break;
    case BAD_PAST_WINDOW:
        s[0].n_tokens = rings[slot0].window - s[0].pos0 + 1;
        s[0].tokens = spare;
        break;
    case BAD_DISCARD_BEYOND: s[0].discard = len0 - rings[slot0].n_keep + 1; break;
    case BAD_DISCARD_NEGATIVE: s[1].discard = -1; break;
    case BAD_POS0_AFTER_DISCARD: /* the whole non-sink part goes: n_keep positions are left */
        s[0].discard = len0 - rings[slot0].n_keep;
        s[0].pos0 = rings[slot0].n_keep + 1;
        break;
    case BAD_OVER_BATCH: /* fits in seqs[1]'s context, but not in the step */
        for (int i = 0; i < n; i++) others += i == 1 ? 0 : s[i].n_tokens;
        s[1].n_tokens = engine_n_batch(e) - others + 1;
        s[1].tokens = spare;
        break;
    case BAD_TOKEN_VOCAB:
        memcpy(spare, s[1].tokens, (size_t)s[1].n_tokens * sizeof *spare);
        spare[s[1].n_tokens - 1] = vocab;
        s[1].tokens = spare;
        break;
    case BAD_TOKEN_NEGATIVE:
        memcpy(spare, s[0].tokens, (size_t)s[0].n_tokens * sizeof *spare);
        spare[0] = -1;
        s[0].tokens = spare;
        break;
    case BAD_N_OUT_BEYOND: s[0].n_out = s[0].n_tokens + 1; break;
    case BAD_N_OUT_NEGATIVE: s[1].n_out = -1; break;
    case BAD_ARGMAX_NO_ROWS:
        s[1].out = topk;
        s[1].out.mode = ENGINE_LOGITS_ARGMAX;
        s[1].n_out = 0;
        break;
    case BAD_NONE_ROWS:
        s[0].out.mode = ENGINE_LOGITS_NONE;
        s[0].n_out = 1;
        break;
    case BAD_MODE: s[1].out.mode = (engine_logits)9; break;
    case BAD_TOP_K_0:
    case BAD_TOP_K_BEYOND:
        s[1].out = topk;
        s[1].out.top_k = c == BAD_TOP_K_0 ? 0 : vocab + 1;
        s[1].n_out = 1;
        break;
    case BAD_ARGMAX_NO_IDS:
        s[0].out = topk;
        s[0].out.mode = ENGINE_LOGITS_ARGMAX;
        s[0].out.ids = NULL;
        s[0].n_out = 1;
        break;
    case BAD_TOPK_NO_VALUES:
        s[1].out = topk;
        s[1].out.values = NULL;
        s[1].n_out = 1;
        break;
    case BAD_FULL_NO_LOGITS:
        s[0].out = topk;
        s[0].out.mode = ENGINE_LOGITS_FULL;
        s[0].out.logits = NULL;
        s[0].n_out = 1;
        break;
    default: break;
    }
    return engine_step(e, s, n);
}

/* Every bad case on base: it must fail as the table says and leave the slots as they were. */
static int run_bad_cases(engine *e, const plan_step *base, const ring_conf *rings, FILE *out)
{
    const int ctx = engine_ctx_size(e), vocab = engine_config(e)->vocab_size, n_slots = engine_n_slots(e);
    int failures = 0;
    int32_t *spare = malloc((size_t)(ctx + 1) * sizeof *spare);
    int *lens = malloc((size_t)n_slots * sizeof *lens);
    engine_output spare_out = { .logits = malloc((size_t)ctx * vocab * sizeof(float)),
                                .ids = malloc((size_t)ctx * vocab * sizeof(int32_t)),
                                .values = malloc((size_t)ctx * vocab * sizeof(float)) };
    if (!spare || !lens || !spare_out.logits || !spare_out.ids || !spare_out.values) {
        fprintf(stderr, "engine_batch_dump: no memory\n");
        return 1;
    }
    for (int s = 0; s < n_slots; s++) lens[s] = engine_slot_len(e, s);
    for (int c = 0; c < BAD_COUNT; c++) {
        for (int i = 0; i <= ctx; i++) spare[i] = 3;
        ifn_error_clear();
        ifn_status st = run_bad(e, (bad_kind)c, base, rings, spare, &spare_out);
        const char *msg = ifn_error_detail(), *text = bad_cases[c].text;
        const bool named = text[0] == '^' ? strncmp(msg, text + 1, strlen(text + 1)) == 0 : strstr(msg, text) != NULL;
        bool lens_kept = true;
        for (int s = 0; s < n_slots; s++) lens_kept = lens_kept && lens[s] == engine_slot_len(e, s);
        if (st == bad_cases[c].want && named && lens_kept) {
            fprintf(out, "bad %s ok: %s: %s\n", bad_cases[c].name, ifn_status_str(st), msg);
        } else {
            fprintf(out, "bad %s FAIL: got %s \"%s\"%s; want %s with \"%s\"\n", bad_cases[c].name, ifn_status_str(st),
                    msg, lens_kept ? "" : ", slot lengths changed", ifn_status_str(bad_cases[c].want),
                    bad_cases[c].text);
            fprintf(stderr, "engine_batch_dump: bad case '%s' failed\n", bad_cases[c].name);
            failures++;
        }
    }
    free(spare);
    free(lens);
    free(spare_out.logits);
    free(spare_out.ids);
    free(spare_out.values);
    return failures;
}

/* ---------------------------------------------------------------- the plan */

static int run_plan(engine *e, FILE *plan, FILE *out)
{
    const int ctx = engine_ctx_size(e), vocab = engine_config(e)->vocab_size, n_slots = engine_n_slots(e);
    plan_step st = { 0 };
    st.seqs = calloc((size_t)n_slots + 1, sizeof *st.seqs);
    st.tokens = calloc((size_t)n_slots + 1, sizeof *st.tokens);
    st.logits = calloc((size_t)n_slots + 1, sizeof *st.logits);
    st.ids = calloc((size_t)n_slots + 1, sizeof *st.ids);
    st.values = calloc((size_t)n_slots + 1, sizeof *st.values);
    ring_conf *rings = malloc((size_t)n_slots * sizeof *rings);
    char *line = malloc(MAX_LINE);
    if (!st.seqs || !st.tokens || !st.logits || !st.ids || !st.values || !rings || !line) return 1;
    for (int i = 0; i < n_slots; i++) rings[i] = (ring_conf){ ctx, 0 };
    for (int i = 0; i <= n_slots; i++) {
        st.tokens[i] = malloc((size_t)(ctx + 1) * sizeof(int32_t));
        st.logits[i] = malloc((size_t)ctx * vocab * sizeof(float));
        st.ids[i] = malloc((size_t)ctx * vocab * sizeof(int32_t));
        st.values[i] = malloc((size_t)ctx * vocab * sizeof(float));
        if (!st.tokens[i] || !st.logits[i] || !st.ids[i] || !st.values[i]) return 1;
    }
    int failures = 0, k = 0, n_rings = 0, lineno = 1;
    bool in_step = false, in_bad = false;
    while (fgets(line, MAX_LINE, plan)) {
        lineno++;
        char *save, *cmd = strtok_r(line, " \t\n", &save);
        if (!cmd || cmd[0] == '#') continue;
        ifn_error_clear(); /* a message is kept until cleared: each command's failure shows its own */
        ifn_status s = IFN_OK;
        if (strcmp(cmd, "step") == 0 || strcmp(cmd, "bad") == 0) {
            in_step = cmd[0] == 's';
            in_bad = !in_step;
            st.n_seqs = 0;
            continue;
        }
        if (strcmp(cmd, "seq") == 0 && (in_step || in_bad) && st.n_seqs < n_slots) {
            if (parse_seq(&save, &st, ctx)) continue;
        } else if (strcmp(cmd, "end") == 0 && in_bad) {
            in_bad = false;
            failures += run_bad_cases(e, &st, rings, out);
            continue;
        } else if (strcmp(cmd, "end") == 0 && in_step) {
            in_step = false;
            s = engine_step(e, st.seqs, st.n_seqs);
            for (int i = 0; s == IFN_OK && i < st.n_seqs; i++)
                dump_rows(out, k, i, &st.seqs[i].out, st.seqs[i].n_out, vocab);
            if (s == IFN_OK) dump_lens(out, k++, e);
        } else if (strcmp(cmd, "eval") == 0) {
            engine_output o = { .logits = st.logits[0], .ids = st.ids[0], .values = st.values[0] };
            char *all = strtok_r(NULL, " \t\n", &save), *mode = strtok_r(NULL, " \t\n", &save);
            char *top_k = strtok_r(NULL, " \t\n", &save);
            int n;
            if (!all || !mode || !top_k || !parse_mode(mode, &o.mode) || sscanf(top_k, "%d", &o.top_k) != 1 ||
                !parse_tokens(&save, st.tokens[0], ctx + 1, &n))
                goto bad_line;
            s = engine_eval(e, st.tokens[0], n, all[0] == '1', &o);
            if (s == IFN_OK) dump_rows(out, k, 0, &o, all[0] == '1' ? n : o.mode != ENGINE_LOGITS_NONE, vocab);
            if (s == IFN_OK) dump_lens(out, k++, e);
        } else if (strcmp(cmd, "reset") == 0) {
            engine_reset(e);
        } else if (strcmp(cmd, "ring") == 0) {
            int v[3];
            for (int i = 0; i < 3; i++) {
                char *tok = strtok_r(NULL, " \t\n", &save);
                if (!tok || sscanf(tok, "%d", &v[i]) != 1) goto bad_line;
            }
            s = engine_slot_ring(e, v[0], v[1], v[2]);
            if (s == IFN_OK) {
                rings[v[0]] = (ring_conf){ v[1], v[2] };
                fprintf(out, "ring %d", n_rings++);
                for (int i = 0; i < n_slots; i++) fprintf(out, " %d", engine_slot_len(e, i));
                fputc('\n', out);
            }
        } else {
            goto bad_line;
        }
        if (s != IFN_OK) {
            fprintf(stderr, "engine_batch_dump: plan line %d: %s\n", lineno, ifn_error_detail());
            failures++;
        }
        continue;
    bad_line:
        fprintf(stderr, "engine_batch_dump: plan line %d is not a command this driver knows\n", lineno);
        return 1;
    }
    for (int i = 0; i <= n_slots; i++) {
        free(st.tokens[i]);
        free(st.logits[i]);
        free(st.ids[i]);
        free(st.values[i]);
    }
    free(st.seqs);
    free(st.tokens);
    free(st.logits);
    free(st.ids);
    free(st.values);
    free(rings);
    free(line);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: engine_batch_dump MODEL PLAN OUT\n");
        return 2;
    }
    comm *c;
    if (comm_init(&argc, &argv, &c) != IFN_OK) {
        fprintf(stderr, "engine_batch_dump: %s\n", ifn_error_detail());
        return 1;
    }
    FILE *plan = fopen(argv[2], "r");
    char first[256], quant[64], kv[16] = "f32";
    engine_params p = { .model_path = argv[1] };
    int n_kv = IFN_KV_COUNT;
    if (plan && fgets(first, sizeof first, plan) &&
        sscanf(first, " engine %d %d %d %63s %15s", &p.n_slots, &p.ctx_size, &p.n_batch, quant, kv) >= 4)
        for (n_kv = 0; n_kv < IFN_KV_COUNT && strcmp(kv, ifn_kv_type_name((ifn_kv_type)n_kv)) != 0; n_kv++) {}
    if (n_kv == IFN_KV_COUNT) {
        fprintf(stderr, "engine_batch_dump: %s: no 'engine N_SLOTS CTX_SIZE N_BATCH QUANT [f32|f16|bf16]' line\n",
                argv[2]);
        if (plan) fclose(plan);
        comm_finalize(c);
        return 2;
    }
    p.quant = strcmp(quant, "-") == 0 ? NULL : quant;
    p.kv_type = (ifn_kv_type)n_kv;
    engine *e;
    if (engine_create(c, &p, &e) != IFN_OK) {
        if (*ifn_error_detail()) fprintf(stderr, "engine_batch_dump: %s\n", ifn_error_detail());
        fclose(plan);
        comm_finalize(c);
        return 1;
    }
    int rc = 0;
    if (comm_rank(c) != 0) {
        rc = engine_serve(e) == IFN_OK ? 0 : 1;
    } else {
        FILE *out = fopen(argv[3], "w");
        if (!out) {
            fprintf(stderr, "engine_batch_dump: cannot write %s\n", argv[3]);
            rc = 1;
        } else {
            fprintf(out, "describe %s\nweights %zu %s\nkv %zu %s\n", engine_describe(e), engine_weight_bytes(e),
                    engine_quant_desc(e), engine_kv_bytes(e), ifn_kv_type_name(p.kv_type));
            rc = run_plan(e, plan, out);
            if (fclose(out) != 0) rc = 1;
        }
        if (engine_stop(e) != IFN_OK) rc = 1;
    }
    fclose(plan);
    engine_destroy(e);
    comm_finalize(c);
    return rc;
}
