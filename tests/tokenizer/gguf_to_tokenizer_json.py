#!/usr/bin/python3
"""Converts the vocabulary of a GGUF file into a Hugging Face tokenizer.json (and
tokenizer_config.json), the way Hugging Face's converters lay them out, so that the same test
vectors can be run through infernode's tokenizer.json loader.

  SentencePiece ("llama"): a BPE model with byte_fallback whose merges are derived from the
      scores as HF's Llama converter does (every split of a piece into two pieces is a merge;
      merges ordered by the merged piece's score), Prepend + Replace normalizer, and the
      Replace/ByteFallback/Fuse/Strip decoder.
  byte-level ("gpt2"): a ByteLevel BPE with the GGUF's merges and the pre-tokenizer regexes
      (GPT-2, or StarCoder's digits + GPT-2) in Split pre-tokenizers.

Only the standard library is used; the GGUF reader below reads metadata only.

  gguf_to_tokenizer_json.py --vocab-dir DIR --out OUT NAME...   writes OUT/NAME/tokenizer.json
Exits 77 (skip) when DIR is absent, unless CI=true, where that is a failure.
"""
import argparse
import json
import os
import struct
import sys

SKIP = 77
META = "\u2581"
REGEX_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
REGEX_DIGIT = r"\p{N}"

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
          11: "<q", 12: "<d"}


def read_gguf_metadata(path):
    """Returns {key: value} of a GGUF v2/v3 file's metadata."""
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string():
        nonlocal pos
        n = take("<Q")
        raw = data[pos:pos + n]
        pos += n
        return raw.decode("utf-8", errors="surrogateescape")

    def value(vtype):
        if vtype == 8:
            return string()
        if vtype == 9:
            etype = take("<I")
            n = take("<Q")
            return [value(etype) for _ in range(n)]
        return take(SCALAR[vtype])

    if data[:4] != b"GGUF":
        raise ValueError("%s: not a GGUF file" % path)
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        raise ValueError("%s: GGUF version %d" % (path, version))
    take("<Q")  # tensor count
    n_kv = take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    return meta


def spm_merges(tokens, scores):
    """Merges of a SentencePiece vocabulary, derived as HF's Llama converter does."""
    vocab = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)
    merges = []
    for i, piece in enumerate(tokens):
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, scores[i]))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)  # stable: ties keep the order above
    return [[left, right] for left, right, _ in merges]


def added_tokens(tokens, types):
    out = []
    for i, (tok, ty) in enumerate(zip(tokens, types)):
        if ty in (2, 3, 4):  # unknown, control, user-defined
            out.append({"id": i, "content": tok, "single_word": False, "lstrip": False,
                        "rstrip": False, "normalized": False, "special": ty != 4})
    return out


def convert(meta):
    model = meta["tokenizer.ggml.model"]
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))

    def token_text(key):
        i = meta.get(key)
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    bos = token_text("tokenizer.ggml.bos_token_id")
    eos = token_text("tokenizer.ggml.eos_token_id")
    unk = token_text("tokenizer.ggml.unknown_token_id")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", model == "llama"))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    vocab = {tok: i for i, tok in enumerate(tokens)}

    if model == "llama":
        scores = meta["tokenizer.ggml.scores"]
        tj = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added_tokens(tokens, types),
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": META},
                {"type": "Replace", "pattern": {"String": " "}, "content": META},
            ]},
            "pre_tokenizer": None,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": ([{"SpecialToken": {"id": bos, "type_id": 0}}] if add_bos and bos else [])
                + [{"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {},
            },
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": META}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ]},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": unk,
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                "vocab": vocab, "merges": spm_merges(tokens, scores),
            },
        }
    elif model == "gpt2":
        pre = meta.get("tokenizer.ggml.pre", "gpt-2")
        splits = [REGEX_GPT2] if pre in ("gpt-2", "default") else [REGEX_DIGIT, REGEX_GPT2]
        if pre not in ("gpt-2", "default", "starcoder"):
            raise ValueError("pre-tokenizer %r is not converted by this script" % pre)
        merges = meta["tokenizer.ggml.merges"]
        if pre == "starcoder":  # exercise the newer [left, right] form too
            merges = [m.split(" ", 1) for m in merges]
        tj = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added_tokens(tokens, types),
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
                for r in splits] + [
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                 "use_regex": False}]},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": False,
                               "trim_offsets": False, "use_regex": False},
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None,
                "continuing_subword_prefix": "", "end_of_word_suffix": "",
                "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": vocab, "merges": merges,
            },
        }
    else:
        raise ValueError("tokenizer model %r is not converted by this script" % model)

    config = {"add_bos_token": add_bos, "add_eos_token": add_eos, "bos_token": bos,
              "eos_token": eos, "unk_token": unk}
    return tj, config


def write_json(path, obj):
    # surrogateescape keeps the bytes of a token that is not valid UTF-8 on its own; JSON
    # cannot hold those, so such a file would be refused here rather than written wrong.
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    if not os.path.isdir(args.vocab_dir):
        if os.environ.get("CI") == "true":
            print("FAIL: %s is missing (CI=true: the shared folder must be present)"
                  % args.vocab_dir, file=sys.stderr)
            return 1
        print("SKIP: %s is missing (the shared folder beside the project)" % args.vocab_dir,
              file=sys.stderr)
        return SKIP
    for name in args.names:
        meta = read_gguf_metadata(os.path.join(args.vocab_dir, name + ".gguf"))
        tj, config = convert(meta)
        out_dir = os.path.join(args.out, name)
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "tokenizer.json"), tj)
        write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
        print("%s: %d tokens, %d merges -> %s" % (name, len(tj["model"]["vocab"]),
                                                   len(tj["model"]["merges"]), out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
