#!/usr/bin/python3
"""The machine profile that speculation's K is planned from is measured once and then read:
a start that measures and a later start that reads use the very same figures (so they plan the
same K); a file for another machine key, or an incomplete one, is measured again and replaced.
usage: test_machine_profile.py MACHINE_PROFILE_DUMP WORKDIR"""
import os
import subprocess
import sys


def get(dump, path, threads=2):
    r = subprocess.run([dump, path, str(threads)], capture_output=True, text=True, check=True)
    kind, *figures = r.stdout.split()
    return kind, figures


def main():
    dump, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "sub", "machine-profile")
    if os.path.exists(path):
        os.remove(path)
    first = get(dump, path)
    second = get(dump, path)
    assert first[0] == "measured" and second[0] == "read", (first, second)
    assert first[1] == second[1], "measured %r, read back %r" % (first[1], second[1])
    assert all(float(v) > 0 for v in first[1]), first
    bw = [float(v) for v in first[1][:4]]
    assert bw == sorted(bw, reverse=True), "a larger working set reads faster: %r" % bw
    with open(path) as fh:
        text = fh.read()
    with open(path, "w") as fh:  # another machine's file
        fh.write(text.replace("key ", "key other-", 1))
    assert get(dump, path)[0] == "measured"
    assert get(dump, path)[0] == "read"
    with open(path, "w") as fh:  # a file cut short
        fh.write("\n".join(text.splitlines()[:3]) + "\n")
    assert get(dump, path)[0] == "measured"
    assert get(dump, path, threads=1)[0] == "measured", "the thread count is part of the key"
    print("machine profile: measured %s, read back equal; other keys and cut files measured again" % " ".join(first[1]))


if __name__ == "__main__":
    main()
