#!/usr/bin/python3
"""Fill-in-the-middle prompts: the ids model_tokenizer_encode_fim builds (through fim_dump) on
the StarCoder vocabulary equal those of the independent reference (tests/reference/
bpe_reference.py, itself checked on llama.cpp's vectors by test_bpe_reference), for code with
Unicode, empty prefix and suffix, special-token text inside the user's code (which must stay
text), leading and trailing whitespace and newlines, digits, CRLF, and random texts; a
vocabulary without the FIM tokens is refused with a message naming <fim_prefix>.

  test_fim.py FIM_DUMP VOCAB_DIR"""
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from bpe_reference import FIM_TOKENS, ByteLevelBPE, missing_shared  # noqa: E402

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
    print("%d passed, %d failed" % (check.passed, check.failed))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
