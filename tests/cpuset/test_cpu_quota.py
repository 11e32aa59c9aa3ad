#!/usr/bin/python3
"""cpu_quota_read (node/cpu_quota.c) on fake cgroup trees, and cpuset_format.

Each case writes a tree in a temporary directory: proc/self/cgroup, proc/self/mountinfo and
the cgroup files under the mount points mountinfo names (prefixed by the tree's root), then
runs `cpuset_dump quota ROOT/proc ROOT` and checks the CPUs (ceil(quota / period) of the
smallest limit, 0 for none), the file that set them, and that a malformed or unreadable file
is skipped with a note that names it, never a crash.

usage: test_cpu_quota.py CPUSET_DUMP"""
import os
import subprocess
import sys
import tempfile

DUMP = sys.argv[1]

V2_MOUNT = "35 30 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_MOUNTS = ("40 30 0:40 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
             "41 30 0:41 / /sys/fs/cgroup/cpuset rw,nosuid - cgroup cgroup rw,cpuset\n")
HYBRID = ("30 22 0:27 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
          "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
          "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
          "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
OTHER = "26 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n21 26 0:20 / /proc rw,relatime - proc proc rw\n"


def case(name, cgroup, mountinfo, files, cpus, source=None, note=(), modes=None):
    """files: {path under the tree: content}; source: the path (under the tree) that must set
    the limit; note: words the note must hold (empty: the note must be empty)."""
    return dict(name=name, cgroup=cgroup, mountinfo=mountinfo, files=files, cpus=cpus, source=source,
                note=note, modes=modes or {})


CASES = [
    case("v2 no limit", "0::/app\n", OTHER + V2_MOUNT,
         {"sys/fs/cgroup/app/cpu.max": "max 100000\n"}, 0),
    case("v2 1.5 CPUs -> 2", "0::/app\n", OTHER + V2_MOUNT,
         {"sys/fs/cgroup/app/cpu.max": "150000 100000\n"}, 2, "sys/fs/cgroup/app/cpu.max"),
    case("v2 0.5 CPUs -> 1", "0::/app\n", V2_MOUNT,
         {"sys/fs/cgroup/app/cpu.max": "50000 100000\n"}, 1, "sys/fs/cgroup/app/cpu.max"),
    case("v2 exactly 3 CPUs", "0::/app\n", V2_MOUNT,
         {"sys/fs/cgroup/app/cpu.max": "300000 100000\n"}, 3, "sys/fs/cgroup/app/cpu.max"),
    case("v2 'max' alone", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "max\n"}, 0),
    case("v2 ancestor smaller than leaf", "0::/kubepods/pod1/c1\n", V2_MOUNT,
         {"sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "400000 100000\n",
          "sys/fs/cgroup/kubepods/pod1/cpu.max": "120000 100000\n",
          "sys/fs/cgroup/kubepods/cpu.max": "max 100000\n"},
         2, "sys/fs/cgroup/kubepods/pod1/cpu.max"),
    case("v2 leaf smaller than ancestor, other periods", "0::/a/b\n", V2_MOUNT,
         {"sys/fs/cgroup/a/b/cpu.max": "25000 50000\n", "sys/fs/cgroup/a/cpu.max": "200000 100000\n"},
         1, "sys/fs/cgroup/a/b/cpu.max"),
    case("v2 limit only at the top of the mount", "0::/x/y\n", V2_MOUNT,
         {"sys/fs/cgroup/cpu.max": "250000 100000\n"}, 3, "sys/fs/cgroup/cpu.max"),
    case("v1 no limit", "3:cpuset:/\n2:cpu,cpuacct:/job\n1:name=systemd:/\n0::/\n", OTHER + V1_MOUNTS,
         {"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "-1\n",
          "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"}, 0),
    case("v1 0.5 CPUs -> 1", "2:cpu,cpuacct:/job\n", V1_MOUNTS,
         {"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n",
          "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"},
         1, "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us"),
    case("v1 1.5 CPUs -> 2", "2:cpu,cpuacct:/job\n", V1_MOUNTS,
         {"sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us": "150000\n",
          "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"},
         2, "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us"),
    case("v1 ancestor smaller than leaf", "2:cpu,cpuacct:/slurm/job7/step0\n", V1_MOUNTS,
         {"sys/fs/cgroup/cpu,cpuacct/slurm/job7/step0/cpu.cfs_quota_us": "800000\n",
          "sys/fs/cgroup/cpu,cpuacct/slurm/job7/step0/cpu.cfs_period_us": "100000\n",
          "sys/fs/cgroup/cpu,cpuacct/slurm/job7/cpu.cfs_quota_us": "300000\n",
          "sys/fs/cgroup/cpu,cpuacct/slurm/job7/cpu.cfs_period_us": "100000\n",
          "sys/fs/cgroup/cpu,cpuacct/slurm/cpu.cfs_quota_us": "-1\n",
          "sys/fs/cgroup/cpu,cpuacct/slurm/cpu.cfs_period_us": "100000\n"},
         3, "sys/fs/cgroup/cpu,cpuacct/slurm/job7/cpu.cfs_quota_us"),
    case("v1 cpu mounted alone, as on this machine ('cpuacct' is not 'cpu')",
         "2:cpuacct:/other\n1:cpu:/job\n0::/\n", HYBRID,
         {"sys/fs/cgroup/cpuacct/other/cpu.cfs_quota_us": "10000\n",
          "sys/fs/cgroup/cpuacct/other/cpu.cfs_period_us": "100000\n",
          "sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "100000\n",
          "sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "100000\n"},
         1, "sys/fs/cgroup/cpu/job/cpu.cfs_quota_us"),
    case("v1 and v2 both limit: the smaller wins", "1:cpu:/job\n0::/job\n", HYBRID,
         {"sys/fs/cgroup/unified/job/cpu.max": "300000 100000\n",
          "sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "200000\n",
          "sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "100000\n"},
         2, "sys/fs/cgroup/cpu/job/cpu.cfs_quota_us"),
    case("container: the mount shows the cgroup's own directory", "0::/docker/abc/inner\n",
         "50 30 0:30 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
         {"sys/fs/cgroup/inner/cpu.max": "max 100000\n", "sys/fs/cgroup/cpu.max": "200000 100000\n"},
         2, "sys/fs/cgroup/cpu.max"),
    case("two mounts of the hierarchy: the one that shows our cgroup", "0::/pod/c1\n",
         "50 30 0:30 /other /mnt/other rw - cgroup2 cgroup2 rw\n" + V2_MOUNT
         + "51 30 0:30 /pod /mnt/pod rw - cgroup2 cgroup2 rw\n",
         {"mnt/other/cpu.max": "100000 100000\n", "sys/fs/cgroup/pod/c1/cpu.max": "300000 100000\n"},
         3, "sys/fs/cgroup/pod/c1/cpu.max"),
    case("a mount point with a space (octal escape in mountinfo)", "0::/app\n",
         "35 30 0:30 / /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n",
         {"sys/fs/my cgroup/app/cpu.max": "100000 100000\n"}, 1, "sys/fs/my cgroup/app/cpu.max"),
    case("a cgroup outside the mount's view ('/..'): only the mount's top is read", "0::/../sibling\n",
         V2_MOUNT, {"sys/fs/cgroup/cpu.max": "100000 100000\n", "sys/fs/sibling/cpu.max": "1 100000\n"},
         1, "sys/fs/cgroup/cpu.max", note=["/../sibling", "outside"]),
    # malformed: skipped with a note naming the file, other levels still count
    case("v2 malformed text", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "abc\n"}, 0,
         note=["sys/fs/cgroup/app/cpu.max", "'abc'"]),
    case("v2 malformed leaf, valid ancestor", "0::/a/b\n", V2_MOUNT,
         {"sys/fs/cgroup/a/b/cpu.max": "150000 100000 7\n", "sys/fs/cgroup/a/cpu.max": "400000 100000\n"},
         4, "sys/fs/cgroup/a/cpu.max", note=["sys/fs/cgroup/a/b/cpu.max"]),
    case("v2 zero quota", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "0 100000\n"}, 0,
         note=["cpu.max", "'0 100000'"]),
    case("v2 zero period", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "100000 0\n"}, 0,
         note=["cpu.max"]),
    case("v2 negative quota", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "-5 100000\n"}, 0,
         note=["cpu.max"]),
    case("v2 overflowing number", "0::/app\n", V2_MOUNT,
         {"sys/fs/cgroup/app/cpu.max": "99999999999999999999999 100000\n"}, 0, note=["cpu.max"]),
    case("v2 empty file", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": ""}, 0, note=["cpu.max"]),
    case("v2 binary garbage", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "\x01\x02\xff" * 100}, 0,
         note=["cpu.max"]),
    case("v1 malformed quota", "1:cpu:/job\n", HYBRID,
         {"sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "12x\n", "sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "100000\n"},
         0, note=["sys/fs/cgroup/cpu/job/cpu.cfs_quota_us", "'12x'"]),
    case("v1 quota without a period", "1:cpu:/job\n", HYBRID,
         {"sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "50000\n"}, 0,
         note=["sys/fs/cgroup/cpu/job/cpu.cfs_period_us", "cannot read"]),
    case("v1 malformed period", "1:cpu:/job\n", HYBRID,
         {"sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "50000\n", "sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "-3\n"},
         0, note=["cpu.cfs_period_us", "'-3'"]),
    case("v1 quota -2", "1:cpu:/job\n", HYBRID,
         {"sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "-2\n", "sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "100000\n"},
         0, note=["cpu.cfs_quota_us"]),
    case("unreadable quota file", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "100000 100000\n"}, 0,
         note=["sys/fs/cgroup/app/cpu.max", "cannot read"], modes={"sys/fs/cgroup/app/cpu.max": 0o000}),
    case("quota file that is a directory", "0::/app\n", V2_MOUNT, {"sys/fs/cgroup/app/cpu.max/x": ""}, 0,
         note=["sys/fs/cgroup/app/cpu.max", "cannot read"]),
    case("malformed /proc/self/cgroup and mountinfo lines", "garbage\n::\n0:\n7:cpu\n0::relative\n\n0::/app\n",
         "short line\n1 2 3 4 5 6 7 8\n35 30 0:30 / /sys/fs/cgroup rw\n" + V2_MOUNT,
         {"sys/fs/cgroup/app/cpu.max": "100000 100000\n"}, 1, "sys/fs/cgroup/app/cpu.max"),
    # missing files: no limit, no note
    case("no proc/self/cgroup", None, V2_MOUNT, {"sys/fs/cgroup/app/cpu.max": "100000 100000\n"}, 0),
    case("no mountinfo", "0::/app\n", None, {"sys/fs/cgroup/app/cpu.max": "100000 100000\n"}, 0),
    case("no cgroup mount", "0::/app\n1:cpu:/app\n", OTHER, {}, 0),
    case("mounted, but no quota files anywhere", "0::/a/b\n1:cpu:/a/b\n", HYBRID, {}, 0),
    case("the cgroup's directory is missing", "0::/gone/away\n", V2_MOUNT,
         {"sys/fs/cgroup/cpu.max": "200000 100000\n"}, 2, "sys/fs/cgroup/cpu.max"),
    case("nothing at all", None, None, {}, 0),
]


def run_case(c, tmp):
    root = os.path.join(tmp, c["name"].replace(" ", "_").replace("/", "_"))
    os.makedirs(os.path.join(root, "proc", "self"))
    if c["cgroup"] is not None:
        with open(os.path.join(root, "proc/self/cgroup"), "w") as f:
            f.write(c["cgroup"])
    if c["mountinfo"] is not None:
        with open(os.path.join(root, "proc/self/mountinfo"), "w") as f:
            f.write(c["mountinfo"])
    for rel, text in c["files"].items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="latin-1") as f:
            f.write(text)
    for rel, mode in c["modes"].items():
        os.chmod(os.path.join(root, rel), mode)
    p = subprocess.run([DUMP, "quota", os.path.join(root, "proc"), root], capture_output=True, text=True,
                       errors="replace", timeout=30)
    if p.returncode != 0:
        return f"exit {p.returncode}: {p.stderr.strip()[-300:]}"
    lines = p.stdout.split("\n")
    fields = dict(kv.split("=", 1) for kv in lines[0].split())
    source = lines[1][len("source="):]
    note = lines[2][len("note="):]
    problems = []
    if int(fields["cpus"]) != c["cpus"]:
        problems.append(f"cpus {fields['cpus']}, expected {c['cpus']}")
    want_source = os.path.join(root, c["source"]) if c["source"] else ""
    if source != want_source:
        problems.append(f"source '{source}', expected '{want_source}'")
    if c["cpus"] == 0 and (fields["quota"] != "0" or fields["period"] != "0"):
        problems.append(f"no limit, but quota {fields['quota']} period {fields['period']}")
    for word in c["note"]:
        if word not in note:
            problems.append(f"note '{note}' lacks '{word}'")
    if not c["note"] and note:
        problems.append(f"unexpected note '{note}'")
    return "; ".join(problems)


FORMATS = [
    ([], "none"), ([1], "1"), ([1, 3], "1,3"), ([0, 1], "0-1"), ([0, 1, 2, 3], "0-3"),
    ([0, 1, 2, 5, 7, 8, 10], "0-2,5,7-8,10"), (list(range(28)) + list(range(56, 84)), "0-27,56-83"),
]


def main():
    failures = 0
    unreadable_is_testable = os.geteuid() != 0  # root reads a file of mode 000 anyway
    with tempfile.TemporaryDirectory(prefix="cpu_quota_") as tmp:
        for c in CASES:
            if c["modes"] and not unreadable_is_testable:
                print(f"skip {c['name']}: root can read any file")
                continue
            problem = run_case(c, tmp)
            print(f"{'FAIL' if problem else 'ok  '} {c['name']}{': ' + problem if problem else ''}")
            failures += bool(problem)
    for ids, want in FORMATS:
        p = subprocess.run([DUMP, "format"] + [str(i) for i in ids], capture_output=True, text=True, timeout=30)
        big, small = p.stdout.split("\n")[:2] if p.returncode == 0 else ("", "")
        ok_small = small == want if len(want) < 12 else (small.endswith("...") and want.startswith(small[:-3]))
        ok = p.returncode == 0 and big == want and ok_small
        print(f"{'ok  ' if ok else 'FAIL'} format {ids[:8]}{'...' if len(ids) > 8 else ''}: '{big}', small "
              f"buffer '{small}' (expected '{want}')")
        failures += not ok
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
