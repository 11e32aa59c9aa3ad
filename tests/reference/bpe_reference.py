"""An independent byte-level BPE tokenizer (GPT-2 and StarCoder pre-tokenizers), written from
the published algorithm rather than from infernode's C code:

  1. special tokens are cut out of the text first, leftmost-longest (Hugging Face's added
     tokens); control tokens only when parse_special, user-defined ones always;
  2. each stretch of plain text is pre-tokenized by the published regex (StarCoder: every
     \\p{N} on its own first, then GPT-2's regex on the text between), rewritten with explicit
     character classes from unicodedata by tests/tokenizer/test_pretokenize.py;
  3. each piece's UTF-8 bytes become GPT-2's printable characters (bytes_to_unicode) and are
     merged by rank from the vocabulary's tokenizer.ggml.merges, the lowest-ranked adjacent
     pair first, every occurrence of it left to right, until no pair has a rank.

The vocabulary comes from a GGUF file's tokenizer.ggml.* keys (read with readback.py).

  bpe_reference.py VOCAB.gguf...   reproduce llama.cpp's vectors VOCAB.gguf.inp / .out
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tokenizer"))
import readback  # noqa: E402
from test_pretokenize import build_regexes, split_isolated  # noqa: E402

TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4
FIM_TOKENS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")
VECTOR_SEP = "\n__ggml_vocab_test__\n"


def bytes_to_unicode():
    """GPT-2's map of the 256 byte values to printable characters: printable Latin-1 bytes
    stand for themselves, the others for U+0100 onwards in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class ByteLevelBPE:
    def __init__(self, metadata):
        md = metadata
        if md["tokenizer.ggml.model"] != "gpt2":
            raise ValueError("not a byte-level BPE vocabulary: %r" % md["tokenizer.ggml.model"])
        self.pre = md.get("tokenizer.ggml.pre", "gpt-2")
        if self.pre not in ("gpt-2", "starcoder"):
            raise ValueError("pre-tokenizer %r is not GPT-2's or StarCoder's" % self.pre)
        self.tokens = md["tokenizer.ggml.tokens"]
        self.types = md["tokenizer.ggml.token_type"]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {}
        for rank, line in enumerate(md["tokenizer.ggml.merges"]):
            a, b = line.split(" ")
            self.ranks.setdefault((a, b), rank)
        self.byte_char = bytes_to_unicode()
        self.bos = md.get("tokenizer.ggml.bos_token_id")
        self.add_bos = bool(md.get("tokenizer.ggml.add_bos_token", False))
        self.gpt2, _, self.digit = build_regexes()
        self.cache = {}

    @staticmethod
    def from_gguf(path):
        return ByteLevelBPE(readback.read_gguf(path)[1])

    def token_id(self, text):
        """The id of the token spelled text, or None."""
        return self.ids.get(text)

    def _specials(self, parse_special):
        kinds = (TOKEN_CONTROL, TOKEN_USER_DEFINED) if parse_special else (TOKEN_USER_DEFINED,)
        found = [t for t, k in zip(self.tokens, self.types) if k in kinds and t]
        return sorted(found, key=len, reverse=True)

    def _split_specials(self, text, parse_special):
        """[(id or None, text)]: leftmost match, longest token at that position."""
        specials = self._specials(parse_special)
        out, pos, plain = [], 0, 0
        while pos < len(text):
            hit = next((s for s in specials if text.startswith(s, pos)), None)
            if hit is None:
                pos += 1
                continue
            if pos > plain:
                out.append((None, text[plain:pos]))
            out.append((self.ids[hit], hit))
            pos += len(hit)
            plain = pos
        if plain < len(text):
            out.append((None, text[plain:]))
        return out

    def pretokenize(self, text):
        if self.pre == "gpt-2":
            return split_isolated(self.gpt2, text)
        pieces = []
        for part in split_isolated(self.digit, text):
            pieces += [part] if self.digit.fullmatch(part) else split_isolated(self.gpt2, part)
        return pieces

    def bpe(self, piece):
        """The ids of one pre-tokenized piece."""
        if piece in self.cache:
            return self.cache[piece]
        word = [self.byte_char[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            pairs = [(self.ranks.get((word[i], word[i + 1])), i) for i in range(len(word) - 1)]
            ranked = [p for p in pairs if p[0] is not None]
            if not ranked:
                break
            best = min(ranked)[0]
            first, second = next((word[i], word[i + 1]) for r, i in ranked if r == best)
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = [self.ids[sym] for sym in word]
        self.cache[piece] = ids
        return ids

    def encode(self, text, add_special=False, parse_special=False):
        ids = [self.bos] if add_special and self.add_bos and self.bos is not None else []
        for tid, part in self._split_specials(text, parse_special):
            if tid is not None:
                ids.append(tid)
            else:
                for piece in self.pretokenize(part):
                    ids += self.bpe(piece)
        return ids

    def encode_fim(self, prefix, suffix, add_special=False):
        """StarCoder's fill-in-the-middle prompt in PSM order, prefix and suffix as plain text:
        [BOS] <fim_prefix> prefix <fim_suffix> suffix <fim_middle>."""
        pre, suf, mid = (self.ids[t] for t in FIM_TOKENS)
        ids = [self.bos] if add_special and self.add_bos and self.bos is not None else []
        return ids + [pre] + self.encode(prefix) + [suf] + self.encode(suffix) + [mid]


def read_vectors(vocab_path):
    """[(text, ids)] of llama.cpp's test-tokenizer-0 files beside the vocabulary."""
    with open(vocab_path + ".inp", encoding="utf-8", newline="") as f:
        inputs = f.read().split(VECTOR_SEP)[:-1]
    with open(vocab_path + ".out", encoding="utf-8") as f:
        outputs = [[int(x) for x in line.split()] for line in f.read().split("\n")]
    return list(zip(inputs, outputs[:len(inputs)]))


def check_vectors(vocab_path):
    """Number of vectors the reference does not reproduce (each printed)."""
    ref = ByteLevelBPE.from_gguf(vocab_path)
    vectors = read_vectors(vocab_path)
    bad = 0
    for text, want in vectors:
        got = ref.encode(text)
        if got != want:
            bad += 1
            print("FAIL %r\n  want %s\n  got  %s" % (text, want, got))
    print("%s: %d/%d vectors reproduced" % (os.path.basename(vocab_path), len(vectors) - bad, len(vectors)))
    return bad


def missing_shared(path):
    """Exit status for a missing ../shared file: skip (77), or fail under CI=true."""
    if os.environ.get("CI") == "true":
        print("FAIL: %s is missing (CI=true: the shared folder must be present)" % path)
        return 1
    print("SKIP: %s is missing (the shared folder beside the project)" % path)
    return 77


def main(paths):
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    for path in paths:
        if not os.path.exists(path):
            return missing_shared(path)
    return 1 if sum(check_vectors(p) for p in paths) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
