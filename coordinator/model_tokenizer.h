/* The tokenizer that belongs to a model file: GGUF metadata, or tokenizer.json beside a
 * Hugging Face model. llama2.c checkpoints carry none. */
#ifndef IFN_MODEL_TOKENIZER_H
#define IFN_MODEL_TOKENIZER_H

#include "model_file.h"
#include "tokenizer.h"

/* IFN_ERR_NOT_FOUND (with a message saying so) if the model has no tokenizer; any other
 * error if it has one that cannot be read. The vocabulary must not be larger than the
 * model's embedding. */
ifn_status model_tokenizer_load(const model_file *mf, tokenizer **out);

#endif
