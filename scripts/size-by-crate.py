#!/usr/bin/env python3
# Text-symbol bytes per crate of an UNSTRIPPED binary (nm -S -C), for issue 12 (binary size).
# Usage: scripts/size-by-crate.py target/release/mini-connector [TOP]   (build with
# --config 'profile.release.strip=false'). C symbols are grouped by a few known prefixes.
import subprocess, sys, re, collections
b = sys.argv[1]
out = subprocess.run(["nm", "-S", "--size-sort", "-C", b], capture_output=True, text=True).stdout
tot = collections.Counter()
for line in out.splitlines():
    parts = line.split(None, 3)
    if len(parts) < 4 or parts[2].lower() not in "tw": continue
    size = int(parts[1], 16); name = parts[3]
    n = name.lstrip("<&*").replace("dyn ", "").replace("mut ", "")
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", n)
    if m: key = m.group(1)
    elif name.startswith("sqlite3") or "sqlite" in name.lower(): key = "[C sqlite]"
    elif "dbus" in name.lower(): key = "[C dbus]"
    elif name.startswith("Fl_") or "Fl_" in name or name.startswith("fl_") or name.startswith("Fl"): key = "[C++ fltk]"
    elif name.lower().startswith("ring_") or name.startswith("GFp") or "ring_core" in name: key = "[C ring]"
    else: key = "[other C/asm]"
    tot[key] += size
s = sum(tot.values())
print(f"text symbols total {s/1048576:.2f} MiB")
for k, v in tot.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 25):
    print(f"{v/1024:9.0f} KiB  {k}")
