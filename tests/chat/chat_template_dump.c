/* Renders conversations with chat_template, for test_chat_template.py.
 *
 *   chat_template_dump < request.json
 *   chat_template_dump --model MODEL
 *
 * The request: {"source": TEMPLATE or null, "bos": "<s>", "eos": "</s>", "strict": false,
 * "add_generation_prompt": true, "messages": [{"role": ..., "content": ...}, ...]} (a role or
 * content that is null or absent is passed as NULL). On success stdout is the family's name,
 * a newline and the rendered text byte for byte; on failure it is "error", a newline, the
 * status's name, a newline and the error detail, and the exit code is 1.
 *
 * With --model, the chat template that model_tokenizer_load read from the model file (GGUF or
 * Hugging Face directory): stdout is "none" and a newline if the model has none, else the
 * family model_tokenizer_chat_template_create recognises, a newline, the rendering of
 * user "Hi", assistant "Yo", user "Q" in hexadecimal, a newline, the positions of the BOS ids
 * when that rendering is encoded as the server does (add_special, parse_special) separated by
 * spaces, a newline and the source; an error as above. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_template.h"
#include "json.h"
#include "model_tokenizer.h"

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 16, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) free(buf);
            buf = bigger;
        }
    }
    *len = n;
    return buf;
}

static bool opt_bool(const json_value *req, const char *key)
{
    const json_value *v = json_get(req, key);
    return v && v->kind == JSON_BOOL && v->u.boolean;
}

static ifn_status run(const json_value *req, char **text, const char **name)
{
    const json_value *list = json_get(req, "messages");
    size_t n = list && list->kind == JSON_ARRAY ? list->u.array.n : 0;
    chat_message *msgs = calloc(n ? n : 1, sizeof *msgs);
    if (!msgs) return ifn_error_set(IFN_ERR_NOMEM, "no memory");
    for (size_t i = 0; i < n; i++) {
        msgs[i].role = json_get_string(&list->u.array.items[i], "role");
        msgs[i].content = json_get_string(&list->u.array.items[i], "content");
    }
    chat_template *t = NULL;
    ifn_status st = chat_template_create(json_get_string(req, "source"), json_get_string(req, "bos"), json_get_string(req, "eos"),
                                         opt_bool(req, "strict"), &t);
    if (st == IFN_OK) {
        *name = chat_template_name(t);
        st = chat_template_render(t, msgs, n, opt_bool(req, "add_generation_prompt"), text);
    }
    chat_template_destroy(t);
    free(msgs);
    return st;
}

static ifn_status show_model(const char *path)
{
    model_file *mf = NULL;
    tokenizer *tok = NULL;
    chat_template *t = NULL;
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ifn_status st = IFN_OK;
    CHECK_GOTO(model_file_open(path, &mf), st, done);
    CHECK_GOTO(model_tokenizer_load(mf, &tok), st, done);
    const char *source = model_tokenizer_chat_template(tok);
    if (!source) {
        printf("none\n");
        goto done;
    }
    CHECK_GOTO(model_tokenizer_chat_template_create(tok, false, &t), st, done);
    static const chat_message CONV[] = {{"user", "Hi"}, {"assistant", "Yo"}, {"user", "Q"}};
    CHECK_GOTO(chat_template_render(t, CONV, 3, true, &text), st, done);
    printf("%s\n", chat_template_name(t));
    CHECK_GOTO(tokenizer_encode(tok, text, strlen(text), true, true, &ids, &n_ids), st, done);
    for (const char *p = text; *p; p++) printf("%02x", (unsigned char)*p);
    printf("\n");
    for (size_t i = 0; i < n_ids; i++)
        if (ids[i] == tokenizer_bos(tok)) printf("%zu ", i);
    printf("\n%s", source);
done:
    free(ids);
    free(text);
    chat_template_destroy(t);
    tokenizer_destroy(tok);
    model_file_close(mf);
    return st;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--model") == 0) {
        ifn_status st = show_model(argv[2]);
        if (st != IFN_OK) printf("error\n%s\n%s", ifn_status_str(st), ifn_error_detail());
        return st == IFN_OK ? 0 : 1;
    }
    size_t len = 0;
    char *in = read_stdin(&len);
    json_value *req = NULL;
    if (!in || json_parse(in, len, "stdin", &req) != IFN_OK) {
        fprintf(stderr, "chat_template_dump: %s\n", ifn_error_detail());
        free(in);
        return 2;
    }
    char *text = NULL;
    const char *name = "";
    ifn_status st = run(req, &text, &name);
    if (st == IFN_OK) printf("%s\n%s", name, text);
    else printf("error\n%s\n%s", ifn_status_str(st), ifn_error_detail());
    free(text);
    json_free(req);
    free(in);
    return st == IFN_OK ? 0 : 1;
}
