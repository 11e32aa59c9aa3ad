/* A tokenizer as the tokenizer.ggml.* metadata of a GGUF file being written (for infernode
 * quantize, whose inputs may carry their tokenizer outside GGUF). */
#ifndef IFN_TOKENIZER_GGUF_WRITE_H
#define IFN_TOKENIZER_GGUF_WRITE_H

#include "gguf_write.h"
#include "tokenizer.h"

/* Writes t in llama.cpp's layout (tokenizer_gguf_write.c says how each kind maps), so that
 * tokenizer_from_gguf gives back a tokenizer that encodes as t does. IFN_ERR_UNSUPPORTED for a
 * metaspace BPE vocabulary without byte fallback, which has no GGUF form; nothing is written
 * then. */
ifn_status tokenizer_write_gguf(const tokenizer *t, gguf_writer *w);

#endif
