/* How `infernode client` shows the server's answers: plain text for people (completions on
 * stdout, usage and timings on stderr), or with --json one JSON object per message on one
 * line of stdout, with only the fields the server set. */
#ifndef IFN_CLIENT_OUTPUT_H
#define IFN_CLIENT_OUTPUT_H

#include <stdio.h>

#include "grpc/health/v1/health.pb-c.h"
#include "infernode.pb-c.h"

/* "stop", "length", "eos", "cancelled", "unspecified"; "unknown" for values this client does
 * not know. */
const char *client_finish_reason_name(int reason);
/* "SERVING", "NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN"; "UNKNOWN_STATUS" otherwise. */
const char *client_serving_status_name(int status);

/* {"text", "token_ids", "finish_reason", "usage", "timings", "kv_window_recomputed", "session_id"} */
void client_json_generate(FILE *out, const Infernode__V1__GenerateResponse *r);
void client_json_token_ids(FILE *out, const int32_t *ids, size_t n);
void client_json_text(FILE *out, const char *text);
/* {"deleted_session_id": ID} */
void client_json_deleted(FILE *out, const char *session_id);
void client_json_model_info(FILE *out, const Infernode__V1__ModelInfoResponse *r);
void client_json_health(FILE *out, const Grpc__Health__V1__HealthCheckResponse *r);

/* One line for stderr: finish reason, token counts and timings that r has, e.g.
 * "infernode: finish: length; prompt 4 tokens, completion 16 tokens; queue 0.2 ms, first token
 * 31.0 ms, 12.5 ms/token". Nothing if r has none of them. */
void client_print_summary(FILE *out, const Infernode__V1__GenerateResponse *r);
/* "infernode: session ID" when r names its session (new_session or session_id). */
void client_print_session(FILE *out, const Infernode__V1__GenerateResponse *r);
/* "1 2 3\n" */
void client_print_token_ids(FILE *out, const int32_t *ids, size_t n);
/* "key: value" lines of the fields the server set. */
void client_print_model_info(FILE *out, const Infernode__V1__ModelInfoResponse *r);

#endif
