#!/usr/bin/python3
"""The guard against a test that needs a package no install script installs.

Lists every Python module that the project's Python files import (import statements anywhere
in a file, importlib.import_module("name") and `python3 -m name` argument lists, read with
ast, nothing executed), leaves out the standard library and the project's own modules (its .py
files, and the _pb2/_pb2_grpc modules the tests generate from .proto files), and for each
other module finds the Debian package whose file it is (importlib's finder, then dpkg -S). It
fails, naming the module and the file that imports it, when:

  - that package is neither installed by deploy/install-deps.sh nor a dependency (Depends,
    Pre-Depends, recursively, alternatives and virtual packages resolved as installed) of one
    of its packages; files under tools/train/ may also use tools/train/install-train-deps.sh;
  - the module is installed outside Debian's packages (pip, a copied file);
  - the module is not importable at all, unless the import handles its absence (a try whose
    handler catches ImportError) and the file does not require it under CI=true (it never
    reads the CI variable). Training-only files whose module comes from a package that
    install-train-deps.sh lists but that is not installed here are reported, not failed: the
    suite never runs them.

  check_python_deps.py [REPO]      (default: the repository holding this file)
"""
import ast
import functools
import glob
import importlib.util
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True

REPO = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
INSTALL = "deploy/install-deps.sh"
TRAIN_INSTALL = "tools/train/install-train-deps.sh"
TRAIN_DIR = "tools/train/"
GRPC_PROTO_DIR = "/usr/share/grpc-proto"
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def python_files():
    """Repository-relative paths of the .py files and python3 scripts without one that git tracks
    or would add (untracked, not ignored)."""
    try:
        out = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             check=True, capture_output=True).stdout.decode()
        paths = [p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for d, dirs, files in os.walk(REPO):
            dirs[:] = [x for x in dirs if not x.startswith((".", "build"))]
            paths += [os.path.relpath(os.path.join(d, f), REPO) for f in files]
    found = []
    for p in sorted(paths):
        full = os.path.join(REPO, p)
        if p.endswith(".py"):
            found.append(p)
        elif os.path.isfile(full) and "." not in os.path.basename(p):
            with open(full, "rb") as f:
                first = f.readline()
            if first.startswith(b"#!") and b"python" in first:
                found.append(p)
    return found


def project_modules(files):
    names = {os.path.splitext(os.path.basename(p))[0] for p in files}
    for p in files:                                    # packages: folders with __init__.py
        if os.path.basename(p) == "__init__.py":
            names.add(os.path.basename(os.path.dirname(p)))
    protos = glob.glob(os.path.join(REPO, "**", "*.proto"), recursive=True) + \
        glob.glob(os.path.join(GRPC_PROTO_DIR, "**", "*.proto"), recursive=True)
    for p in protos:
        stem = os.path.splitext(os.path.basename(p))[0]
        names |= {stem + "_pb2", stem + "_pb2_grpc"}
    return names


def handles_absence(node, parents):
    """True when an import sits in the body of a try that catches ImportError."""
    child = node
    for p in parents:
        if isinstance(p, ast.Try) and child in p.body:
            for h in p.handlers:
                names = [] if h.type is None else \
                    [e.id for e in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type])
                     if isinstance(e, ast.Name)]
                if h.type is None or IMPORT_ERRORS & set(names):
                    return True
        child = p
    return False


def imports_of(path):
    """[(module, line, handles_absence)], module as written (dotted)."""
    with open(os.path.join(REPO, path), "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    parents = {}
    for node in ast.walk(tree):
        for c in ast.iter_child_nodes(node):
            parents[c] = node

    def chain(n):
        out = []
        while n in parents:
            n = parents[n]
            out.append(n)
        return out

    found = []
    for node in ast.walk(tree):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) == "import_module" and node.args and \
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            mods = [node.args[0].value]
        elif isinstance(node, ast.List):               # [python, "-m", "module", ...]
            vals = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            mods = [vals[i + 1] for i in range(len(vals) - 1)
                    if vals[i] == "-m" and isinstance(vals[i + 1], str)]
        for m in mods:
            found.append((m, node.lineno, handles_absence(node, chain(node))))
    return found


def reads_ci(path):
    with open(os.path.join(REPO, path), encoding="utf-8", errors="replace") as f:
        return re.search(r"""environ(\.get)?\s*[\[(]\s*["']CI["']""", f.read()) is not None


def script_packages(rel):
    """The names in the packages=( ... ) array of an install script."""
    with open(os.path.join(REPO, rel)) as f:
        lines = f.read().splitlines()
    try:
        start = lines.index("packages=(")
        end = lines.index(")", start)
    except ValueError:
        raise SystemExit(f"FAIL: {rel} has no packages=( ... ) list, one line to each bracket")
    words = []
    for line in lines[start + 1:end]:
        words += line.split("#", 1)[0].split()
    return words


def installed_packages():
    """{name: (depends-alternatives list)} and {virtual: [providers]} of installed packages."""
    fmt = "${Package}\\t${db:Status-Abbrev}\\t${Provides}\\t${Depends}, ${Pre-Depends}\\n"
    out = subprocess.run(["dpkg-query", "-W", "-f", fmt], check=True, capture_output=True,
                         text=True).stdout
    deps, provides = {}, {}
    for line in out.splitlines():
        name, status, prov, dep = (line.split("\t") + ["", "", ""])[:4]
        if not status.startswith("ii"):
            continue
        deps[name] = [[a.split()[0].split(":")[0] for a in group.split("|") if a.strip()]
                      for group in dep.split(",") if group.strip()]
        for p in prov.split(","):
            if p.strip():
                provides.setdefault(p.split()[0].split(":")[0], []).append(name)
    return deps, provides


def closure(roots, deps, provides):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        for name in [p] + provides.get(p, []):
            if name in deps and name not in seen:
                seen.add(name)
                for alts in deps[name]:
                    todo += alts
    return seen


def module_file(top, dotted):
    """The file (or folder) the module is loaded from, or None when it is not importable.
    A namespace package (google) is resolved one level further (google.protobuf)."""
    try:
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.origin in (None, "namespace") and "." in dotted:
            sub = ".".join(dotted.split(".")[:2])
            spec = importlib.util.find_spec(sub) or spec
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin not in (None, "namespace", "built-in", "frozen"):
        return os.path.realpath(spec.origin)
    locs = list(spec.submodule_search_locations or [])
    return os.path.realpath(locs[0]) if locs else spec.origin


@functools.lru_cache(maxsize=None)
def owning_package(path):
    r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    line = [x for x in r.stdout.splitlines() if not x.startswith("diversion")][0]
    return [p.strip().split(":")[0] for p in line.rsplit(": ", 1)[0].split(",")]


def main():
    files = python_files()
    own = project_modules(files)
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    deps, provides = installed_packages()
    base = script_packages(INSTALL)
    train = script_packages(TRAIN_INSTALL)
    allowed = closure(base, deps, provides)
    allowed_train = allowed | closure(train, deps, provides)
    missing_from_install = [p for p in base if p not in deps and not provides.get(p)]
    failures, notes, providers = [], [], {}
    for path in files:
        try:
            found = imports_of(path)
        except SyntaxError as e:
            failures.append(f"{path}: not valid Python ({e})")
            continue
        training = path.startswith(TRAIN_DIR)
        for dotted, line, guarded in found:
            top = dotted.split(".")[0]
            if top in stdlib or top in own or top == "__main__":
                continue
            where = f"{path}:{line}"
            scripts = f"{INSTALL}" + (f" or {TRAIN_INSTALL}" if training else "")
            loc = module_file(top, dotted)
            if loc is None:
                if guarded and not reads_ci(path):
                    notes.append(f"{where}: {dotted} is not importable here; the file handles "
                                 "its absence and does not require it under CI=true")
                elif training and f"python3-{top.lower().replace('_', '-')}" in train and \
                        f"python3-{top.lower().replace('_', '-')}" not in deps:
                    notes.append(f"{where}: {dotted} (training only) comes from "
                                 f"python3-{top.lower()} in {TRAIN_INSTALL}, not installed here")
                else:
                    failures.append(f"{where} imports {dotted}, which is not importable here: "
                                    f"no package installed by {scripts} provides it")
                continue
            if loc in ("built-in", "frozen"):
                continue
            pkgs = owning_package(loc)
            if not pkgs:
                failures.append(f"{where} imports {dotted} from {loc}, which no Debian package "
                                f"provides (installed by hand?)")
                continue
            ok = allowed_train if training else allowed
            if not any(p in ok for p in pkgs):
                failures.append(f"{where} imports {dotted}, from the package {pkgs[0]}, which "
                                f"{scripts} does not install (nor any of its dependencies)")
                continue
            providers.setdefault(dotted.split(".")[0], pkgs[0])
    for p in missing_from_install:
        failures.append(f"{INSTALL} lists {p}, which is not installed: run it first")
    for n in notes:
        print("note:", n)
    for m, p in sorted(providers.items()):
        print(f"ok: {m} from {p}")
    print(f"{len(files)} Python files, {len(providers)} third-party modules, all from packages "
          f"that {INSTALL} installs" if not failures else f"{len(failures)} problem(s):")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
