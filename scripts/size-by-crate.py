#!/usr/bin/env python3
# Text-symbol bytes per crate of an UNSTRIPPED binary (nm -S -C), for issue 12 (binary size).
# Usage: scripts/size-by-crate.py target/release/mini-connector [TOP]   (build with
# --config 'profile.release.strip=false', or --profile bench). C symbols are grouped by a few
# known prefixes.
#        scripts/size-by-crate.py --compare BEFORE AFTER crate1,crate2,...
# compares the listed crates function by function (hash suffixes dropped): same size for every
# function means the code was compiled the same (e.g. the streaming path after an opt-level change).
import subprocess, sys, re, collections


def crate_of(name):
    n = name.lstrip("<&*").replace("dyn ", "").replace("mut ", "")
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", n)
    if m: return m.group(1)
    if name.startswith("sqlite3") or "sqlite" in name.lower(): return "[C sqlite]"
    if "dbus" in name.lower(): return "[C dbus]"
    if name.startswith("Fl_") or "Fl_" in name or name.startswith("fl_") or name.startswith("Fl"): return "[C++ fltk]"
    if name.lower().startswith("ring_") or name.startswith("GFp") or "ring_core" in name: return "[C ring]"
    return "[other C/asm]"


def text_symbols(b):
    out = subprocess.run(["nm", "-S", "--size-sort", "-C", b], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or parts[2].lower() not in "tw": continue
        yield parts[3], int(parts[1], 16)


if sys.argv[1] == "--compare":
    before, after, crates = sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    def per_fn(b):
        d = collections.defaultdict(int)
        for name, size in text_symbols(b):
            if crate_of(name) in crates:
                d[(crate_of(name), re.sub(r"::h[0-9a-f]{16}$", "", name))] += size
        return d
    a, b = per_fn(before), per_fn(after)
    for crate in crates:
        fa = {k: v for k, v in a.items() if k[0] == crate}
        fb = {k: v for k, v in b.items() if k[0] == crate}
        same = sum(1 for k in fa if fb.get(k) == fa[k])
        print(f"{crate:20} before {sum(fa.values()):9,d} B {len(fa):5d} fns | after {sum(fb.values()):9,d} B"
              f" {len(fb):5d} fns | same size {same}")
    sys.exit(0)

tot = collections.Counter()
for name, size in text_symbols(sys.argv[1]):
    tot[crate_of(name)] += size
s = sum(tot.values())
print(f"text symbols total {s/1048576:.2f} MiB")
for k, v in tot.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 25):
    print(f"{v/1024:9.0f} KiB  {k}")
