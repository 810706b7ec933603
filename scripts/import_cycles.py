#!/usr/bin/env python3
"""Finds import cycles between the files of each crate in the workspace.

A file imports another when it names a path into it: `use crate::a::b`,
`use super::x`, or `crate::a::b::c` inline. A `mod` declaration is not an
import. Prints every cycle (a strongly connected set of two or more
files) and exits 1 if there is one.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates")


def modules(src):
    """Module path (tuple) -> file, for one crate's src/."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            out[tuple(parts)] = os.path.join(dirpath, f)
    return out


def strip_tests(text):
    """The file without its `#[cfg(test)] mod tests { ... }` block."""
    i = text.find("#[cfg(test)]\nmod tests")
    return text if i < 0 else text[:i]


PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
BRACED = re.compile(r"\buse\s+(crate|super)((?:::\w+)*)::\{([^;]*)\};", re.S)


def targets(mod, text, mods):
    """The files `text` (the file of module `mod`) names paths into."""
    paths = []
    for m in BRACED.finditer(text):
        base = m.group(1) + m.group(2)
        for item in re.split(r"[,\s]+", m.group(3)):
            item = item.strip().split(" as ")[0].strip("{} ")
            if item and item != "self" and item != "*":
                paths.append(base + "::" + item)
            else:
                paths.append(base)
    for m in PATH.finditer(BRACED.sub("", text)):
        paths.append(m.group(1) + m.group(2))
    found = set()
    for p in paths:
        segs = p.split("::")
        if segs[0] == "crate":
            start, rest = (), segs[1:]
        else:
            start, rest = mod, segs
            while rest and rest[0] == "super":
                start, rest = start[:-1], rest[1:]
        full = start + tuple(rest)
        for n in range(len(full), -1, -1):
            if full[:n] in mods:
                found.add(mods[full[:n]])
                break
    return found


def cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    found = []
    files = 0
    for crate in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, crate, "src")
        if not os.path.isdir(src):
            continue
        mods = modules(src)
        graph = {}
        for mod, path in mods.items():
            files += 1
            text = strip_tests(open(path, encoding="utf-8").read())
            graph[path] = targets(mod, text, mods) - {path}
        found += cycles(graph)
    for c in found:
        print("cycle:", " <-> ".join(os.path.relpath(p, os.path.join(ROOT, "..")) for p in c))
    print(f"{files} files, {len(found)} import cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
