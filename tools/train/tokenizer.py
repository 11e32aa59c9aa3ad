#!/usr/bin/python3
"""Trains the SentencePiece tokenizer on the training split and tokenizes both splits.

The tokenizer is SentencePiece BPE with byte fallback, trained on the training split only.
Settings chosen for source code (measured on the held-out split, see models/README.md):

  * identity normalization, no removal of extra whitespace, no dummy prefix: text is kept
    byte for byte; a space becomes U+2581 and nothing is added at the start
    (tokenizer.ggml.add_space_prefix = false in GGUF);
  * the trainer sees multi-line chunks of at most 2 KiB cut at line ends (not single lines),
    so pieces may contain "\\n" ("):\\n", "\\n\\n", closing quotes and a newline) instead of
    every newline being the byte token <0x0A>: 3.09 bytes/token on held-out text against
    2.91 when trained line by line;
  * whitespace-only pieces allowed (runs of indentation become one token), digits split;
  * byte fallback: any character outside the vocabulary becomes its UTF-8 bytes <0xXX>;
  * ids 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), then the 256 byte tokens, then the pieces.

Each document is tokenized as  <s> ids(file) </s>  and the documents are concatenated in
corpus order into DIR/{train,heldout}.u16 (uint16 little-endian); DIR/{split}.docs.u32 holds
the start offset of every document.

  tokenizer.py --out DIR [--vocab-size 8192]
"""
import argparse
import os
import sys
import time

import numpy as np

import corpus

CHUNK_BYTES = 2048


def chunks(text, limit=CHUNK_BYTES):
    """Pieces of text of at most limit characters, cut after a newline (a longer line stays
    whole)."""
    out, cur = [], ""
    for line in text.splitlines(keepends=True):
        if cur and len(cur) + len(line) > limit:
            out.append(cur)
            cur = ""
        cur += line
    if cur:
        out.append(cur)
    return out


def train_tokenizer(train_texts, prefix, vocab_size):
    import sentencepiece as spm
    sentences = [c for t in train_texts for c in chunks(t)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, model_type="bpe",
        vocab_size=vocab_size, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, byte_fallback=True,
        allow_whitespace_only_pieces=True, split_digits=True, split_by_whitespace=True,
        character_coverage=0.9999, max_sentence_length=16384, input_sentence_size=0,
        shuffle_input_sentence=False, num_threads=1, minloglevel=2,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def encode_docs(sp, texts):
    ids, starts = [], []
    n = 0
    for t in texts:
        doc = [sp.bos_id()] + sp.encode(t) + [sp.eos_id()]
        starts.append(n)
        n += len(doc)
        ids.append(np.asarray(doc, dtype=np.uint16))
    return np.concatenate(ids), np.asarray(starts, dtype=np.uint32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab-size", type=int, default=8192)
    args = ap.parse_args()
    import sentencepiece as spm
    os.makedirs(args.out, exist_ok=True)
    files, stats = corpus.collect()
    print(corpus.summary(files, stats))
    with open(os.path.join(args.out, "corpus.txt"), "w") as fh:
        fh.write(corpus.summary(files, stats) + "\n")
    t0 = time.time()
    prefix = os.path.join(args.out, "tokenizer")
    train_tokenizer([f["text"] for f in files if f["split"] == "train"], prefix, args.vocab_size)
    print("tokenizer trained in %.1f s -> %s.model" % (time.time() - t0, prefix))
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    for split in ("train", "heldout"):
        texts = [f["text"] for f in files if f["split"] == split]
        ids, starts = encode_docs(sp, texts)
        ids.tofile(os.path.join(args.out, split + ".u16"))
        starts.tofile(os.path.join(args.out, split + ".docs.u32"))
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        print("%-8s %8d tokens, %.3f bytes/token (BOS/EOS not counted)"
              % (split, len(ids), nbytes / (len(ids) - 2 * len(texts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
