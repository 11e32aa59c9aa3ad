#include "client_output.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

const char *client_finish_reason_name(int reason)
{
    switch (reason) {
    case INFERNODE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED: return "unspecified";
    case INFERNODE__V1__FINISH_REASON__FINISH_REASON_STOP: return "stop";
    case INFERNODE__V1__FINISH_REASON__FINISH_REASON_LENGTH: return "length";
    case INFERNODE__V1__FINISH_REASON__FINISH_REASON_EOS: return "eos";
    case INFERNODE__V1__FINISH_REASON__FINISH_REASON_CANCELLED: return "cancelled";
    }
    return "unknown";
}

const char *client_serving_status_name(int status)
{
    switch (status) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN: return "UNKNOWN";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING: return "SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING: return "NOT_SERVING";
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
    }
    return "UNKNOWN_STATUS";
}

/* ---- a minimal JSON writer: one object per line ------------------------------------- */

typedef struct {
    FILE *out;
    bool first;
} json_obj;

static json_obj json_begin(FILE *out)
{
    fputc('{', out);
    return (json_obj){ .out = out, .first = true };
}

static void json_key(json_obj *j, const char *key)
{
    if (!j->first) fputs(", ", j->out);
    j->first = false;
    cli_json_string(j->out, key);
    fputs(": ", j->out);
}

static void json_int(json_obj *j, const char *key, int64_t v)
{
    json_key(j, key);
    fprintf(j->out, "%" PRId64, v);
}

static void json_double(json_obj *j, const char *key, double v)
{
    json_key(j, key);
    if (!isfinite(v)) {
        fputs("null", j->out);
        return;
    }
    char num[32];
    for (int prec = 1; prec <= 17; prec++) { /* the shortest decimal that reads back as v */
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v) break;
    }
    fputs(num, j->out);
}

static void json_str(json_obj *j, const char *key, const char *v)
{
    json_key(j, key);
    cli_json_string(j->out, v);
}

static void json_bool(json_obj *j, const char *key, bool v)
{
    json_key(j, key);
    fputs(v ? "true" : "false", j->out);
}

static void json_ids(json_obj *j, const char *key, const int32_t *ids, size_t n)
{
    json_key(j, key);
    fputc('[', j->out);
    for (size_t i = 0; i < n; i++) fprintf(j->out, i ? ", %" PRId32 : "%" PRId32, ids[i]);
    fputc(']', j->out);
}

static void json_end(json_obj *j) { fputc('}', j->out); }

static void json_end_line(json_obj *j)
{
    json_end(j);
    fputc('\n', j->out);
}

void client_json_generate(FILE *out, const Infernode__V1__GenerateResponse *r)
{
    json_obj j = json_begin(out);
    if (r->text) json_str(&j, "text", r->text);
    json_ids(&j, "token_ids", r->token_ids, r->n_token_ids);
    if (r->has_finish_reason) json_str(&j, "finish_reason", client_finish_reason_name((int)r->finish_reason));
    if (r->usage) {
        const Infernode__V1__Usage *u = r->usage;
        json_key(&j, "usage");
        json_obj o = json_begin(out);
        if (u->has_prompt_tokens) json_int(&o, "prompt_tokens", u->prompt_tokens);
        if (u->has_completion_tokens) json_int(&o, "completion_tokens", u->completion_tokens);
        if (u->has_draft_tokens_proposed) json_int(&o, "draft_tokens_proposed", u->draft_tokens_proposed);
        if (u->has_draft_tokens_accepted) json_int(&o, "draft_tokens_accepted", u->draft_tokens_accepted);
        if (u->has_speculative_steps) json_int(&o, "speculative_steps", u->speculative_steps);
        json_end(&o);
    }
    if (r->timings) {
        const Infernode__V1__Timings *t = r->timings;
        json_key(&j, "timings");
        json_obj o = json_begin(out);
        if (t->has_queue_seconds) json_double(&o, "queue_seconds", t->queue_seconds);
        if (t->has_time_to_first_token_seconds) json_double(&o, "time_to_first_token_seconds", t->time_to_first_token_seconds);
        if (t->has_time_per_output_token_seconds)
            json_double(&o, "time_per_output_token_seconds", t->time_per_output_token_seconds);
        json_end(&o);
    }
    if (r->has_kv_window_recomputed) json_bool(&j, "kv_window_recomputed", r->kv_window_recomputed);
    if (r->session_id) json_str(&j, "session_id", r->session_id);
    json_end_line(&j);
}

void client_json_token_ids(FILE *out, const int32_t *ids, size_t n)
{
    json_obj j = json_begin(out);
    json_ids(&j, "token_ids", ids, n);
    json_end_line(&j);
}

void client_json_text(FILE *out, const char *text)
{
    json_obj j = json_begin(out);
    json_str(&j, "text", text ? text : "");
    json_end_line(&j);
}

void client_json_deleted(FILE *out, const char *session_id)
{
    json_obj j = json_begin(out);
    json_str(&j, "deleted_session_id", session_id);
    json_end_line(&j);
}

/* Calls show(field name, value as text, is_string) for each field of ModelInfoResponse that
 * the server set, in the .proto's order, read through protobuf-c's descriptor so that fields
 * added to the message show up without code here. Strings, integers and booleans are shown. */
typedef void (*field_fn)(void *ctx, const char *name, const char *value, bool is_string);

static void model_info_fields(const Infernode__V1__ModelInfoResponse *r, field_fn show, void *ctx)
{
    const ProtobufCMessageDescriptor *d = r->base.descriptor;
    const char *base = (const char *)r;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *v = base + f->offset;
        bool has = f->quantifier_offset && *(const protobuf_c_boolean *)(base + f->quantifier_offset);
        char num[32];
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING:
            if (*(char *const *)v) show(ctx, f->name, *(char *const *)v, true);
            break;
        case PROTOBUF_C_TYPE_INT32:
            snprintf(num, sizeof num, "%" PRId32, *(const int32_t *)v);
            if (has) show(ctx, f->name, num, false);
            break;
        case PROTOBUF_C_TYPE_INT64:
            snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)v);
            if (has) show(ctx, f->name, num, false);
            break;
        case PROTOBUF_C_TYPE_BOOL:
            if (has) show(ctx, f->name, *(const protobuf_c_boolean *)v ? "true" : "false", false);
            break;
        default:
            break;
        }
    }
}

static void json_field(void *ctx, const char *name, const char *value, bool is_string)
{
    json_obj *j = ctx;
    json_key(j, name);
    if (is_string) cli_json_string(j->out, value);
    else fputs(value, j->out);
}

static void text_field(void *ctx, const char *name, const char *value, bool is_string)
{
    fprintf(ctx, "%s: %s\n", name, value);
}

void client_json_model_info(FILE *out, const Infernode__V1__ModelInfoResponse *r)
{
    json_obj j = json_begin(out);
    model_info_fields(r, json_field, &j);
    json_end_line(&j);
}

void client_print_model_info(FILE *out, const Infernode__V1__ModelInfoResponse *r)
{
    model_info_fields(r, text_field, out);
}

void client_json_health(FILE *out, const Grpc__Health__V1__HealthCheckResponse *r)
{
    json_obj j = json_begin(out);
    json_str(&j, "status", client_serving_status_name((int)r->status));
    json_end_line(&j);
}

/* ---- text for people ---------------------------------------------------------------- */

void client_print_token_ids(FILE *out, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) fprintf(out, i ? " %" PRId32 : "%" PRId32, ids[i]);
    fputc('\n', out);
}

/* One line of parts in groups: ", " between parts of a group, "; " between groups. */
typedef struct {
    char text[512];
    size_t len;
    int group;
} summary_line;

static void summary_add(summary_line *s, int group, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void summary_add(summary_line *s, int group, const char *fmt, ...)
{
    const char *sep = s->len == 0 ? "" : group != s->group ? "; " : ", ";
    s->group = group;
    int n = snprintf(s->text + s->len, sizeof s->text - s->len, "%s", sep);
    if (n > 0) s->len = s->len + (size_t)n < sizeof s->text ? s->len + (size_t)n : sizeof s->text - 1;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(s->text + s->len, sizeof s->text - s->len, fmt, ap);
    va_end(ap);
    if (n > 0) s->len = s->len + (size_t)n < sizeof s->text ? s->len + (size_t)n : sizeof s->text - 1;
}

void client_print_summary(FILE *out, const Infernode__V1__GenerateResponse *r)
{
    enum { FINISH, TOKENS, TIMES, KV };
    const Infernode__V1__Usage *u = r->usage;
    const Infernode__V1__Timings *t = r->timings;
    summary_line s = { .len = 0 };
    if (r->has_finish_reason) summary_add(&s, FINISH, "finish: %s", client_finish_reason_name((int)r->finish_reason));
    if (u && u->has_prompt_tokens) summary_add(&s, TOKENS, "prompt %d tokens", u->prompt_tokens);
    if (u && u->has_completion_tokens) summary_add(&s, TOKENS, "completion %d tokens", u->completion_tokens);
    if (u && u->has_draft_tokens_proposed) summary_add(&s, TOKENS, "draft proposed %d", u->draft_tokens_proposed);
    if (u && u->has_draft_tokens_accepted) summary_add(&s, TOKENS, "draft accepted %d", u->draft_tokens_accepted);
    if (u && u->has_speculative_steps) summary_add(&s, TOKENS, "in %d verifying steps", u->speculative_steps);
    if (t && t->has_queue_seconds) summary_add(&s, TIMES, "queue %.1f ms", 1e3 * t->queue_seconds);
    if (t && t->has_time_to_first_token_seconds)
        summary_add(&s, TIMES, "first token %.1f ms", 1e3 * t->time_to_first_token_seconds);
    if (t && t->has_time_per_output_token_seconds)
        summary_add(&s, TIMES, "%.1f ms/token", 1e3 * t->time_per_output_token_seconds);
    if (r->has_kv_window_recomputed && r->kv_window_recomputed) summary_add(&s, KV, "KV window recomputed");
    if (s.len > 0) fprintf(out, "infernode: %s\n", s.text);
}

void client_print_session(FILE *out, const Infernode__V1__GenerateResponse *r)
{
    if (r->session_id && *r->session_id) fprintf(out, "infernode: session %s\n", r->session_id);
}
