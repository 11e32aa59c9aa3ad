"""infernode's JSON parser against Python's json module: valid documents parse to the same
tree, invalid ones are refused with a message that names the place."""
import json
import os
import subprocess
import sys
import tempfile

DUMP = sys.argv[1]

VALID = [
    '{"a": 1, "b": [true, false, null], "c": {"d": "e"}}',
    '[]', '{}', '  [ 1 , 2 ]  ', '"plain"', '-0', '0', '3.25e-7', '-1.5E+300', '123456789012',
    r'"esc \" \\ \/ \b \f \n \r \t"',
    r'"\u00e9\u4e2d\ud83e\udd99 raw: é中🦙"',
    r'"lone \ud800 surrogate"',
    r'"nul \u0000 inside"',
    '{"dup": 1, "dup": 2}',
    json.dumps({"vocab": {f"tok{i}": i for i in range(3000)}, "merges": [f"a{i} b{i}" for i in range(3000)]}),
    "[" * 100 + "]" * 100,
]

INVALID = [
    '', '{', '[1,]', '{"a" 1}', '{"a": }', '"unterminated', '[1 2]', 'tru', 'nul', '01x', '"\\x"',
    '"\\u12"', '{"a": 1} x', '[' * 600 + ']' * 600, '"tab\there"', '{1: 2}', '-', '1e', '[.5]',
]


def run(text):
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(text.encode("utf-8", "surrogatepass"))
        path = f.name
    try:
        return subprocess.run([DUMP, path], capture_output=True)
    finally:
        os.unlink(path)


def normalise(v):
    """Python keeps the last duplicate key too; lone surrogates become U+FFFD in infernode."""
    if isinstance(v, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in v)
    if isinstance(v, list):
        return [normalise(x) for x in v]
    if isinstance(v, dict):
        return {k: normalise(x) for k, x in v.items()}
    return v


def main():
    failures = 0
    for doc in VALID:
        r = run(doc)
        want = normalise(json.loads(doc))
        if r.returncode != 0:
            print(f"FAIL valid rejected: {doc[:60]!r}: {r.stderr.decode()}")
            failures += 1
            continue
        got = json.loads(r.stdout.decode("utf-8"), object_pairs_hook=lambda kv: dict(kv))
        if got != want:
            print(f"FAIL mismatch for {doc[:60]!r}: got {str(got)[:80]} want {str(want)[:80]}")
            failures += 1
    for doc in INVALID:
        r = run(doc)
        err = r.stderr.decode()
        if r.returncode != 1 or "invalid JSON at line" not in err:
            print(f"FAIL invalid accepted or unclear: {doc[:40]!r}: rc={r.returncode} {err.strip()}")
            failures += 1
    print(f"{len(VALID)} valid and {len(INVALID)} invalid documents, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
