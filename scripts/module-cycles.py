#!/usr/bin/env python3
"""Lists import cycles between the files (modules) of a crate's src/ directory.

A file depends on module M when it names `crate::M` (in a `use` line or a path) or, for a child
module file, `super::` (its parent). Comments are skipped. A child module (a file in its parent's
directory, declared by the parent) is part of its parent: edges between a module and its own
ancestors are not counted. Prints each strongly connected group of two or more files; exits 1 if
there is one. Usage: scripts/module-cycles.py crates/sim/src [...]
"""
import os
import re
import sys


def modules(src):
    """Module path ('a', 'a::b') -> file, for every .rs file under src (lib.rs is the root '')."""
    out = {}
    for dirpath, _, files in os.walk(src):
        for fn in files:
            if not fn.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, fn), src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel == ["lib"] or rel == ["main"]:
                rel = []
            out["::".join(rel)] = os.path.join(dirpath, fn)
    return out


def deps(mod, path, mods):
    text = open(path).read()
    text = re.sub(r"//[^\n]*", "", text)
    found = set()
    for m in re.finditer(r"\bcrate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
        parts = m.group(1).split("::")
        # the longest prefix that is a module
        for k in range(len(parts), 0, -1):
            cand = "::".join(parts[:k])
            if cand in mods:
                found.add(cand)
                break
    if re.search(r"\bsuper::", text) and mod:
        parent = "::".join(mod.split("::")[:-1])
        # `super::` inside an inline `mod tests` refers to the file itself
        outside_tests = re.split(r"#\[cfg\(test\)\]", text)[0]
        if re.search(r"\bsuper::", outside_tests):
            found.add(parent)
    found.discard(mod)
    found.discard("")
    return found


def sccs(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    for src in sys.argv[1:]:
        mods = modules(src)
        def related(a, b):
            return a.startswith(b + "::") or b.startswith(a + "::")

        graph = {
            m: {d for d in deps(m, p, mods) if not related(m, d)}
            for m, p in mods.items()
            if m
        }
        cycles = [sorted(c) for c in sccs(graph) if len(c) > 1]
        if not cycles:
            print(f"{src}: no cycles between its {len(graph)} modules")
        for c in cycles:
            bad = True
            edges = [f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c]
            print(f"{src}: cycle among {', '.join(c)}: {'; '.join(edges)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
