/* GGUF: the header reader (every key, array and tensor record), its typed getters, the GGUF
 * tokenizer reader, and the model opener and loader over the same bytes. */
#include "fuzz_util.h"
#include "gguf.h"
#include "tokenizer.h"

/* Every getter on every key: each must answer with a value or an error, never read outside
 * the map. */
static void read_metadata(const gguf_file *f)
{
    for (size_t i = 0; i < gguf_n_kv(f); i++) {
        gguf_str key;
        gguf_type type;
        const void *value;
        size_t value_len;
        gguf_kv_at(f, i, &key, &type, &value, &value_len);
        fuzz_touch(value, value_len);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(key.len < 255 ? key.len : 255), key.ptr);
        uint32_t u;
        int32_t s;
        float x;
        bool b;
        gguf_str str;
        gguf_arr arr;
        (void)gguf_get_u32(f, name, &u);
        (void)gguf_get_i32(f, name, &s);
        (void)gguf_get_f32(f, name, &x);
        (void)gguf_get_bool(f, name, &b);
        if (gguf_get_str(f, name, &str) == IFN_OK) fuzz_touch(str.ptr, str.len);
        if (gguf_get_arr(f, name, &arr) == IFN_OK && arr.type == GGUF_TYPE_STRING)
            for (size_t j = 0; j < arr.n; j++) {
                gguf_str e = gguf_arr_str(&arr, j);
                fuzz_touch(e.ptr, e.len);
            }
        ifn_error_clear();
    }
}

static void read_tensors(const gguf_file *f)
{
    for (size_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        FUZZ_ASSERT(gguf_find_tensor(f, t->name) != NULL);
        fuzz_touch(t->data, t->nbytes);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("input.gguf", data, size);
    gguf_file *f = NULL;
    if (gguf_file_open(path, &f) == IFN_OK) {
        read_metadata(f);
        read_tensors(f);
        tokenizer *tok = NULL;
        if (tokenizer_from_gguf(f, &tok) == IFN_OK) {
            int32_t *ids = NULL;
            size_t n = 0;
            static const char text[] = "def f(x):\n    return x  # <s> caf\xC3\xA9";
            if (tokenizer_encode(tok, text, sizeof text - 1, true, true, &ids, &n) == IFN_OK) {
                char *out = NULL;
                size_t len = 0;
                if (tokenizer_decode(tok, ids, n, true, &out, &len) == IFN_OK) free(out);
                free(ids);
            }
            tokenizer_destroy(tok);
        }
        gguf_file_close(f);
    }
    ifn_error_clear();
    fuzz_open_model(path);
    return 0;
}
