#!/usr/bin/python3
"""Fill-in-the-middle prompts: the ids model_tokenizer_encode_fim builds (through fim_dump) on
the StarCoder vocabulary equal those of the independent reference (tests/reference/
bpe_reference.py, itself checked on llama.cpp's vectors by test_bpe_reference), for code with
Unicode, empty prefix and suffix, special-token text inside the user's code (which must stay
text), leading and trailing whitespace and newlines, digits, CRLF, and random texts; a
vocabulary without the FIM tokens is refused with a message naming <fim_prefix>.

Code Llama (tests/reference/code_llama_reference.py: Meta's format on Google's SentencePiece,
with Llama 2's vocabulary grown to Code Llama's shape): the same texts give Meta's prompt ids,
the suffix without SentencePiece's leading space; marker text typed by the user stays text;
▁<EOT> ends generation; a generated middle's text equals Meta's decode_infilling, leading
space kept; a vocabulary with only some of the markers is refused naming the missing one.

  test_fim.py FIM_DUMP VOCAB_DIR"""
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from bpe_reference import FIM_TOKENS, ByteLevelBPE, missing_shared  # noqa: E402
import code_llama_reference as cl  # noqa: E402
from gguf_write import STRING, write_gguf  # noqa: E402

CASES = [
    ("def add(a, b):\n    ", "\n    return c\n"),
    ("# Grüße, 世界 🌍\nname = \"", "\"\nprint(name)  # naïve café, Ж, ½\n"),
    ("", "    return x\n"),
    ("def f():\n", ""),
    ("", ""),
    ("s = \"<fim_middle>\"\n", "t = '<fim_prefix><fim_suffix>' + \"<|endoftext|>\"\n"),
    ("<fim_middle>", "<fim_middle>"),
    ("   \n\n\tindented", "trailing   \n\n"),
    ("\n", " "),
    ("x = 12345 + 0.5", "67_890\n"),
    ("a\r\n", "\r\nb"),
    ("it's 'LL", "'re ok"),
]

ALPHABET = list("abcXYZ_ ()[]{}:=+.,\"'#\n\n\t") + ["    ", "\r\n", "é", "中", "🙂", "٣", "12", "<fim_middle>",
                                                    "<fim_suffix>", "<|endoftext|>", "def ", "return "]


def random_cases(n, seed=7):
    rng = random.Random(seed)
    text = lambda: "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 20)))  # noqa: E731
    return [(text(), text()) for _ in range(n)]


def fim_dump(binary, vocab, cases, add_special=False):
    """(exit status, [ids per case], stderr)."""
    data = b"\0".join(t.encode("utf-8") for pair in cases for t in pair)
    r = subprocess.run([binary, vocab] + (["--add-special"] if add_special else []), input=data,
                       capture_output=True, timeout=120)
    lines = r.stdout.decode().splitlines()
    return r.returncode, [[int(x) for x in line.split()] for line in lines], r.stderr.decode()


def middles(binary, vocab, pairs):
    """(exit status, [text per (prompt ids, generated ids)], stderr) of fim_dump --middle."""
    data = "".join(" ".join(map(str, p)) + " ; " + " ".join(map(str, g)) + "\n" for p, g in pairs).encode()
    r = subprocess.run([binary, vocab, "--middle"], input=data, capture_output=True, timeout=120)
    texts = r.stdout.decode("utf-8", "replace").split("\0")
    return r.returncode, texts[:-1] if texts and texts[-1] == "" else texts, r.stderr.decode()


def write_code_llama_vocab(path, llama_gguf, rename=None):
    """Llama 2's vocabulary grown to Code Llama's; rename {id: text} changes pieces."""
    md = cl.gguf_tokenizer_metadata(llama_gguf)
    if rename:
        tokens = next(v[1] for k, _, v in md if k == "tokenizer.ggml.tokens")
        for i, text in rename.items():
            tokens[i] = text
    write_gguf(path, [("general.architecture", STRING, "llama")] + md, [])


CODE_LLAMA_CASES = [
    ("def f(<PRE> x", " <SUF>y <MID>"),
    ("s = \"\u2581<MID>\"", "\u2581<EOT>\n"),
    (" leading", " space"),
    ("", " return x\n"),
]


def test_code_llama(binary, vocab_dir, check):
    llama_gguf = os.path.join(vocab_dir, "ggml-vocab-llama-spm.gguf")
    sp_model = os.path.join(vocab_dir, "llama2-tokenizer.model")
    for path in (llama_gguf, sp_model):
        if not os.path.exists(path):
            return missing_shared(path)
    ref = cl.CodeLlamaReference(sp_model)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = os.path.join(tmp, "code-llama-vocab.gguf")
        write_code_llama_vocab(vocab, llama_gguf)
        cases = CASES + CODE_LLAMA_CASES + random_cases(300, seed=11)
        rc, got, err = fim_dump(binary, vocab, cases, add_special=True)
        if not check(rc == 0 and len(got) == len(cases),
                     "code llama: fim_dump exited %d with %d lines for %d cases: %s" % (rc, len(got), len(cases), err)):
            return 1
        markers = [ref.pre, ref.suf, ref.mid]
        for (prefix, suffix), ids in zip(cases, got):
            want = ref.encode_fim(prefix, suffix)
            check(ids == want, "code llama %r %r\n  reference %s\n  C         %s" % (prefix, suffix, want, ids))
            check([i for i in ids if i in markers + [ref.eot]] == markers,
                  "code llama %r %r: markers inside the user's text: %s" % (prefix, suffix, ids))
        rc, plain, err = fim_dump(binary, vocab, cases)
        check(rc == 0 and plain == [ids[1:] for ids in got], "code llama without add_special: not the ids less BOS")
        print("code llama: %d FIM prompts against the reference" % len(cases))

        r = subprocess.run([binary, vocab, "--eog"], capture_output=True, text=True, timeout=60)
        eog = [int(x) for x in r.stdout.split()]
        check(r.returncode == 0 and ref.eot in eog and ref.sp.eos_id() in eog and ref.pre not in eog,
              "code llama end-of-generation ids: %s (want </s> and \u2581<EOT>)" % eog)

        # Middles as the model would generate them after a prompt with text (text, then
        # ▁<EOT>), decoded as Meta does.
        prompts = [ids for (prefix, suffix), ids in zip(cases, got) if prefix or suffix]
        texts = [t for pair in cases for t in pair if t]
        pairs = [(prompts[k % len(prompts)], ref.encode_infilling(t) + [ref.eot]) for k, t in enumerate(texts)]
        pairs += [(prompts[k], ref.sp.encode(t)) for k, t in enumerate(texts[:50])]  # "▁" first, as often
        rc, got_texts, err = middles(binary, vocab, pairs)
        check(rc == 0 and len(got_texts) == len(pairs), "fim_dump --middle: exit %d, %d texts for %d: %s"
              % (rc, len(got_texts), len(pairs), err))
        for (_, ids), text in zip(pairs, got_texts):
            want = ref.decode_middle(ids)
            check(text == want, "middle %s: %r != decode_infilling %r" % (ids, text, want))
        check(any(t.startswith(" ") for t in got_texts), "some middle starts with a space")
        print("code llama: %d middles against decode_infilling" % len(pairs))

        # After a prompt without text (BOS and the markers only: empty prefix and suffix) the
        # middle starts a text, and SentencePiece drops the "▁" prefix's space there.
        empty = ref.encode_fim("", "")
        pairs = [(empty, ref.sp.encode(t)) for t in texts[:50]]
        rc, got_texts, err = middles(binary, vocab, pairs)
        check(rc == 0 and got_texts == [ref.sp.decode(ids) for _, ids in pairs],
              "middles after an empty FIM prompt: %s %s" % (got_texts[:3], err))

        partial = os.path.join(tmp, "partial.gguf")
        write_code_llama_vocab(partial, llama_gguf, rename={32008: "<unused8>"})
        rc, out, err = fim_dump(binary, partial, [("a", "b")])
        check(rc == 1 and not out and "\u2581<SUF>" in err, "a vocabulary without \u2581<SUF>: exit %d, %r" % (rc, err))
    return 0


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, cond, msg):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            if self.failed <= 10:
                print("FAIL", msg)
        return cond


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, vocab_dir = sys.argv[1:]
    starcoder = os.path.join(vocab_dir, "ggml-vocab-starcoder.gguf")
    if not os.path.exists(starcoder):
        return missing_shared(starcoder)
    ref = ByteLevelBPE.from_gguf(starcoder)
    check = Checks()

    cases = CASES + random_cases(300)
    rc, got, err = fim_dump(binary, starcoder, cases)
    if not check(rc == 0 and len(got) == len(cases),
                 "fim_dump exited %d with %d lines for %d cases: %s" % (rc, len(got), len(cases), err)):
        return 1
    fim_ids = [ref.token_id(t) for t in FIM_TOKENS]
    for (prefix, suffix), ids in zip(cases, got):
        want = ref.encode_fim(prefix, suffix)
        check(ids == want, "%r %r\n  reference %s\n  C         %s" % (prefix, suffix, want, ids))
        # Only the three the prompt puts there: special-token text typed by the user stays text.
        check([i for i in ids if i in fim_ids] == fim_ids and ref.token_id("<|endoftext|>") not in ids,
              "%r %r: special tokens inside the user's text: %s" % (prefix, suffix, ids))
    print("starcoder: %d FIM prompts against the reference" % len(cases))

    # StarCoder adds no BOS: add_special changes nothing.
    rc, got_special, err = fim_dump(binary, starcoder, CASES, add_special=True)
    check(rc == 0 and got_special == got[:len(CASES)], "add_special changed StarCoder's FIM ids (%d): %s" % (rc, err))

    for name in ("ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"):
        rc, out, err = fim_dump(binary, os.path.join(vocab_dir, name), [("a", "b")])
        check(rc == 1 and not out and "<fim_prefix>" in err,
              "%s (no FIM tokens): exit %d, stdout %s, stderr %r" % (name, rc, out, err))
    status = test_code_llama(binary, vocab_dir, check)
    print("%d passed, %d failed" % (check.passed, check.failed))
    return 1 if check.failed or status else 0


if __name__ == "__main__":
    sys.exit(main())
