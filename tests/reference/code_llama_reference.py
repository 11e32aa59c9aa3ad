"""Code Llama's fill-in-the-middle, as Meta's reference builds it, on Google's SentencePiece
(Debian's python3-sentencepiece) as the independent implementation.

Code Llama's vocabulary is Llama 2's 32000 pieces plus 16 more; four of those are the
infilling markers, at ids 32007-32010. Its tokenizer is not in ../shared, so the tests grow
Llama 2's (llama2-tokenizer.model, and the same vocabulary as GGUF metadata in
ggml-vocab-llama-spm.gguf) to that shape: the markers at Code Llama's ids, the other twelve
added ids unused. The GGUF stores the markers as normal pieces, as Code Llama's own files do;
the reference's SentencePiece model marks them control pieces, the rule infernode and
llama.cpp apply on load, so that no text ever encodes to one.

Meta's format (infilling_prompt_tokens, prefix-suffix-middle order):
    [BOS] ▁<PRE> encode(prefix) ▁<SUF> encode_infilling(suffix) ▁<MID>
where encode adds SentencePiece's dummy-prefix space and encode_infilling does not
(it encodes "☺" + text and drops the first two pieces, "▁" and "☺"). The model ends the middle
with ▁<EOT>; decode_infilling keeps the middle's leading space (decodes "☺" + ids and drops
the "☺")."""
import readback
from gguf_write import ARRAY, BOOL, FLOAT32, INT32, STRING, UINT32

MARKERS = {32007: "\u2581<PRE>", 32008: "\u2581<SUF>", 32009: "\u2581<MID>", 32010: "\u2581<EOT>"}
N_VOCAB = 32016
NORMAL, CONTROL, UNUSED = 1, 3, 5  # token types, the same numbers in GGUF and SentencePiece


def _added(i):
    """(text, GGUF type) of Code Llama's added id i (32000 <= i < 32016)."""
    return (MARKERS[i], NORMAL) if i in MARKERS else ("<unused%d>" % (i - 32000), UNUSED)


def gguf_tokenizer_metadata(llama_spm_gguf):
    """The tokenizer.ggml.* metadata of the grown vocabulary, as (key, type, value) entries."""
    md = readback.read_gguf(llama_spm_gguf)[1]
    tokens = list(md["tokenizer.ggml.tokens"])
    scores = list(md["tokenizer.ggml.scores"])
    types = list(md["tokenizer.ggml.token_type"])
    assert len(tokens) == 32000, "expected Llama 2's 32000 pieces"
    for i in range(32000, N_VOCAB):
        text, ty = _added(i)
        tokens.append(text)
        scores.append(0.0)
        types.append(ty)
    return [
        ("tokenizer.ggml.model", STRING, "llama"),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        ("tokenizer.ggml.scores", ARRAY, (FLOAT32, scores)),
        ("tokenizer.ggml.token_type", ARRAY, (INT32, types)),
        ("tokenizer.ggml.bos_token_id", UINT32, md["tokenizer.ggml.bos_token_id"]),
        ("tokenizer.ggml.eos_token_id", UINT32, md["tokenizer.ggml.eos_token_id"]),
        ("tokenizer.ggml.unknown_token_id", UINT32, md["tokenizer.ggml.unknown_token_id"]),
        ("tokenizer.ggml.add_bos_token", BOOL, True),
        ("tokenizer.ggml.add_eos_token", BOOL, False),
    ]


class CodeLlamaReference:
    def __init__(self, llama2_tokenizer_model):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as model_pb2
        m = model_pb2.ModelProto()
        with open(llama2_tokenizer_model, "rb") as f:
            m.ParseFromString(f.read())
        assert len(m.pieces) == 32000, "expected Llama 2's 32000 pieces"
        for i in range(32000, N_VOCAB):
            text, ty = _added(i)
            p = m.pieces.add()
            p.piece, p.score, p.type = text, 0.0, CONTROL if ty == NORMAL else UNUSED
        self.sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
        self.pre, self.suf, self.mid, self.eot = (self.sp.piece_to_id(MARKERS[i]) for i in sorted(MARKERS))
        assert [self.pre, self.suf, self.mid, self.eot] == sorted(MARKERS)
        self.bos = self.sp.bos_id()
        self.smiley = self.sp.piece_to_id("\u263a")

    def encode_infilling(self, text):
        ids = self.sp.encode("\u263a" + text)
        assert ids[:2] == [self.sp.piece_to_id("\u2581"), self.smiley], ids[:2]
        return ids[2:]

    def encode_fim(self, prefix, suffix):
        """Meta's infilling_prompt_tokens (BOS included)."""
        return ([self.bos, self.pre] + self.sp.encode(prefix) + [self.suf] + self.encode_infilling(suffix)
                + [self.mid])

    def decode_middle(self, ids):
        """Meta's decode_infilling: the middle's text with its leading space."""
        return self.sp.decode([self.smiley] + list(ids))[1:]
