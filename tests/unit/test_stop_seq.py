#!/usr/bin/python3
"""stop_seq_scan against a direct reading of its contract: text grows chunk by chunk; after
each chunk, the earliest position where any stop string occurs in the whole text, else the
text minus its longest tail that is a proper prefix of a stop string. usage: test_stop_seq.py DUMP"""
import random
import subprocess
import sys


def reference(stops, chunks):
    out, text = [], ""
    for ch in chunks:
        text += ch
        hits = [text.find(s) for s in stops if s and s in text]
        if hits:
            out.append(f"m{min(hits)}")
            break
        hold = max([k for s in stops if s for k in range(1, len(s)) if text.endswith(s[:k])] + [0])
        out.append(f"s{len(text) - hold}")
    return " ".join(out)


def main():
    rng = random.Random(7)
    cases = [(["~~"], ["a", "~", "b"]), (["~~"], ["a", "~", "~", "b"]), (["abc", "bcd"], ["xab", "cd"]),
             (["abc", "bcd"], ["xb", "c", "d"]), (["aab"], ["a", "a", "a", "b"]), (["x"], ["", "x"]),
             (["", "q"], ["ab"]), (["stop"], ["st", "o", "p", "more"]), (["ab", "b"], ["a", "b"])]
    for _ in range(3000):
        alphabet = "ab~"
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        chunks = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(1, 8))]
        cases.append((stops, chunks))
    stdin = "".join("|".join(s) + "\t" + "|".join(c) + "\n" for s, c in cases)
    got = subprocess.run([sys.argv[1]], input=stdin.encode(), capture_output=True, check=True).stdout.decode().splitlines()
    bad = [(s, c, g.strip(), reference(s, c)) for (s, c), g in zip(cases, got) if g.strip() != reference(s, c)]
    for b in bad[:10]:
        print("FAIL stops=%r chunks=%r got %r want %r" % b)
    print(f"{len(cases) - len(bad)}/{len(cases)} cases agree")
    return 1 if bad or len(got) != len(cases) else 0


if __name__ == "__main__":
    sys.exit(main())
