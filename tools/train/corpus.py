#!/usr/bin/python3
"""The training corpus: Python source that every Debian 12 machine has after infernode's
install step (deploy/install-deps.sh), namely

  * the standard library, /usr/lib/python3.N/ (without its site-packages/dist-packages), and
  * the Python packages that install step pulls in, under /usr/lib/python3/dist-packages/
    (python3-numpy: numpy/).

Rules, all deterministic:
  * files named *.py, read as UTF-8 (a file that is not valid UTF-8 is skipped), "\\r\\n"
    turned into "\\n";
  * generated data files are left out: files larger than 256 KiB (pydoc_data/topics.py) and
    the charmap tables that gencodec.py generated (encodings/cp1252.py and the like);
  * exact duplicates are removed by SHA-256 of the text; of a set of duplicates the file
    whose path sorts first is kept;
  * files are ordered by path (bytewise);
  * the held-out split is every file whose SHA-256 of its relative path (root name + path
    below the root, e.g. "stdlib/json/decoder.py") has a first byte below 16 (1/16 = 6.25 %
    of files in expectation); training never sees these files, the tokenizer included.

  corpus.py [--out DIR]     prints the counts, and with --out writes DIR/manifest.tsv
"""
import argparse
import glob
import hashlib
import os
import sys

MAX_FILE_BYTES = 256 * 1024
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
# The Python packages of deploy/install-deps.sh (python3-numpy), as directories under
# DIST_PACKAGES.
INSTALLED_PACKAGES = ["numpy"]
HELDOUT_BELOW = 16  # first byte of sha256(relative path) < 16: held out


def roots():
    """[(name, directory, excluded subdirectories)] in a fixed order."""
    out = []
    for d in sorted(glob.glob("/usr/lib/python3.*")):
        if os.path.isdir(d) and os.path.exists(os.path.join(d, "os.py")):
            out.append(("stdlib", d, {"site-packages", "dist-packages"}))
    if len(out) != 1:
        raise SystemExit("corpus: expected exactly one /usr/lib/python3.N standard library, "
                         "found %d" % len(out))
    for pkg in INSTALLED_PACKAGES:
        d = os.path.join(DIST_PACKAGES, pkg)
        if not os.path.isdir(d):
            raise SystemExit("corpus: %s is missing (run deploy/install-deps.sh)" % d)
        out.append((pkg, d, set()))
    return out


def is_generated(text):
    head = text[:600]
    return "gencodec.py" in head


def heldout(relpath):
    return hashlib.sha256(relpath.encode("utf-8")).digest()[0] < HELDOUT_BELOW


def collect():
    """Returns (files, stats): files is a list of dicts {rel, path, text, split} in corpus
    order (by rel path), deduplicated."""
    found = []
    stats = {"seen": 0, "not_utf8": 0, "too_big": 0, "generated": 0, "duplicates": 0}
    for name, root, exclude in roots():
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath == root:
                dirnames[:] = [d for d in dirnames if d not in exclude]
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.endswith(".py"):
                    continue
                path = os.path.join(dirpath, fn)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                rel = name + "/" + os.path.relpath(path, root)
                found.append((rel, path))
    found.sort(key=lambda rp: rp[0].encode("utf-8"))
    files, seen_hash = [], set()
    for rel, path in found:
        stats["seen"] += 1
        with open(path, "rb") as fh:
            raw = fh.read()
        if len(raw) > MAX_FILE_BYTES:
            stats["too_big"] += 1
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats["not_utf8"] += 1
            continue
        text = text.replace("\r\n", "\n")
        if is_generated(text):
            stats["generated"] += 1
            continue
        h = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if h in seen_hash:
            stats["duplicates"] += 1
            continue
        seen_hash.add(h)
        if not text.strip():
            stats.setdefault("empty", 0)
            stats["empty"] += 1
            continue
        files.append({"rel": rel, "path": path, "text": text, "sha256": h,
                      "split": "heldout" if heldout(rel) else "train"})
    return files, stats


def summary(files, stats):
    lines = ["files seen %d; skipped: %s" % (stats["seen"], ", ".join(
        "%s %d" % (k, v) for k, v in stats.items() if k != "seen"))]
    for split in ("train", "heldout"):
        sel = [f for f in files if f["split"] == split]
        nbytes = sum(len(f["text"].encode("utf-8")) for f in sel)
        lines.append("%-8s %5d files %10d bytes" % (split, len(sel), nbytes))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out")
    args = ap.parse_args()
    files, stats = collect()
    print(summary(files, stats))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "manifest.tsv"), "w") as fh:
            fh.write("split\tbytes\tsha256\tpath\n")
            for f in files:
                fh.write("%s\t%d\t%s\t%s\n" % (f["split"], len(f["text"].encode("utf-8")),
                                               f["sha256"], f["rel"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
