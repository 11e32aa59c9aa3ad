#!/usr/bin/python3
"""Checks the hand-written pre-tokenizers against the published regexes.

Python's re has no \\p{L}, so the regexes are rewritten with explicit character classes built
from unicodedata (the same source as coordinator/unicode_data.c) and White_Space for \\s, then
run on many random texts made from characters chosen to hit every rule: letters of several
scripts and categories, numbers (Nd, Nl, No), each kind of whitespace, line breaks,
apostrophes before contraction letters in both cases, punctuation, marks and emoji.

  test_pretokenize.py PRETOK_DUMP [--seed N] [--count N]
"""
import random
import re
import subprocess
import sys
import unicodedata

WHITESPACE_CONTROLS = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85}


def char_class(pred):
    """A regex class body matching the code points where pred(cp) holds."""
    parts, start = [], None
    for cp in range(0x110001):
        inside = cp <= 0x10FFFF and pred(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            end = cp - 1
            parts.append("\\U%08x" % start if start == end else "\\U%08x-\\U%08x" % (start, end))
            start = None
    return "".join(parts)


def category_major(cp):
    return unicodedata.category(chr(cp))[0]


def is_white_space(cp):
    return cp in WHITESPACE_CONTROLS or unicodedata.category(chr(cp)) in ("Zs", "Zl", "Zp")


def build_regexes():
    L = char_class(lambda cp: category_major(cp) == "L")
    N = char_class(lambda cp: category_major(cp) == "N")
    S = char_class(is_white_space)
    gpt2 = (r"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+"
            .format(L=L, N=N, S=S))
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n{L}{N}]?[{L}]+|[{N}]{{1,3}}"
              r"| ?[^{S}{L}{N}]+[\r\n]*|[{S}]*[\r\n]+|[{S}]+(?![^{S}])|[{S}]+"
              .format(L=L, N=N, S=S))
    return re.compile(gpt2), re.compile(llama3), re.compile("[%s]" % N)


def split_isolated(regex, text):
    """HF's Split with behavior Isolated: every match is a piece, and so is every gap."""
    pieces, pos = [], 0
    for m in regex.finditer(text):
        if m.start() > pos:
            pieces.append(text[pos:m.start()])
        if m.end() > m.start():
            pieces.append(m.group())
        pos = m.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


ALPHABET = (
    list("aZzéßЖ中ǅʰ") + list("09٣Ⅻ½") +
    [" ", " ", " ", "\t", "\n", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000",
     "\u200b", "\x1c"] +
    ["'", "'", "'"] + list("sStTrReEvVmMlLdD") +
    list("!.,-$") + ["\U0001F600", "\u0301", "\u00ad", "\U0001F3FB"]
)


def random_text(rng):
    n = rng.randint(0, 24)
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    dump = sys.argv[1]
    seed, count = 1234, 3000
    args = sys.argv[2:]
    while args:
        if args[0] == "--seed":
            seed = int(args[1])
        elif args[0] == "--count":
            count = int(args[1])
        args = args[2:]
    gpt2, llama3, digit = build_regexes()
    rng = random.Random(seed)
    fixed = ["", " ", "  Hello", "Hello  world", "a \n b", "\n\n x", " \n", "x  ", "'s 'S 'Re",
             "it's 'LL", "3333333", "a1234b", " 12 345 ", "!!!\n\n", " ?!\r\nx", "ab\u00a0cd",
             "x\t\ty", "'\n", "\u3000\u3000x"]
    texts = fixed + [random_text(rng) for _ in range(count)]
    expect = {
        "gpt2": lambda t: split_isolated(gpt2, t),
        "llama3": lambda t: split_isolated(llama3, t),
        "starcoder": lambda t: [q for p in split_isolated(digit, t)
                                for q in (split_isolated(gpt2, p) if not digit.fullmatch(p) else [p])],
    }
    payload = b"\0".join(t.encode("utf-8") for t in texts)
    failures = 0
    for kind, fn in expect.items():
        out = subprocess.run([dump, kind], input=payload, capture_output=True, check=True)
        lines = out.stdout.decode().split("\n")
        bad = 0
        for i, text in enumerate(texts):
            want = [len(p.encode("utf-8")) for p in fn(text)]
            got = [int(x) for x in lines[i].split()] if i < len(lines) else None
            if got != want:
                bad += 1
                if bad <= 5:
                    b = text.encode("utf-8")
                    print("FAIL %s %r\n  want %r\n  got  %r" % (
                        kind, text, [b[sum(want[:k]):sum(want[:k + 1])].decode() for k in range(len(want))],
                        got), file=sys.stderr)
        print("%s: %d/%d texts split as the regex does" % (kind, len(texts) - bad, len(texts)))
        failures += bad
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
