#!/usr/bin/env bash
# The .deb, checked the way an administrator gets it (issue 13): scripts/release.sh --deb-only
# with the quick `dev` profile (the release profile is fat LTO: see packaging/README.md for
# the timings), then
#   1. the package's control data and maintainer scripts (system user, no start before it is
#      configured, --purge removes config/state/logs);
#   2. `dpkg -x` into a throwaway root: every file in place, `mini-connector --version` runs from
#      /usr/bin there, the unit passes `systemd-analyze verify`, completions and man pages render;
#   3. SHA256SUMS and the minisign signatures verify, and a tampered package does not;
#   4. the Windows installer source compiles with wixl (a stand-in .exe; the real one is
#      release.sh's job), where wixl is installed;
#   5. with MC_PACKAGE_INSTALL=1 (CI, as root, on a disposable machine): a real `dpkg -i`
#      (account, directories and their modes, service not started), then `dpkg --purge`.
# Each check fails the script when what it looks for is missing.
# Usage: scripts/test-package.sh [--no-build]  (run from scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

# minisign signs and verifies; wixl compiles the MSI source and msiinfo (Debian's msitools,
# a separate package from wixl) reads its tables back.
for pair in minisign:minisign wixl:wixl msiinfo:msitools; do
    tool="${pair%%:*}" deb="${pair#*:}"
    if ! command -v "$tool" >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" >/dev/null ||
            { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$deb" >/dev/null; } || true
    fi
done
command -v minisign >/dev/null 2>&1 || { echo "FAIL: minisign is not installed (apt-get install minisign)" >&2; exit 1; }

release_flags=(--deb-only --profile dev)
[[ "${1:-}" == --no-build ]] && release_flags+=(--no-build)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/out"
root="$work/root"
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
check() { # check DESCRIPTION COMMAND...
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then echo "ok   $what"; else fail "$what"; fi
}

started=$SECONDS
scripts/release.sh "${release_flags[@]}" --out "$out" 2> >(grep -v '^\s*$' >&2)
echo "==> release.sh --deb-only --profile dev: $((SECONDS - started)) s"
shopt -s nullglob
debs=("$out"/*.deb)
((${#debs[@]} == 1)) || { echo "FAIL: expected one .deb in $out, found ${#debs[@]}" >&2; exit 1; }
deb="${debs[0]}"

echo "==> 1. control data and maintainer scripts of $(basename "$deb")"
control="$(dpkg-deb -f "$deb")"
check "Package: mini-connector" grep -qx 'Package: mini-connector' <<<"$control"
check "Depends on adduser (postinst uses it)" grep -Eq '^Depends:.*adduser' <<<"$control"
check "no GUI libraries in Depends (the headless build)" bash -c '! grep -Eiq "libx11|libfltk|libpango|libcairo|libgl" <<<"$1"' _ "$control"
mkdir -p "$work/control"
dpkg-deb -e "$deb" "$work/control"
for script in postinst prerm postrm; do
    check "maintainer script $script is present and executable" test -x "$work/control/$script"
done
check "postinst creates the system user" grep -q 'adduser --system' "$work/control/postinst"
check "postinst creates /etc/mini-connector 0750 for the user" grep -q 'install -d -m 0750 -o "$USER" -g "$USER" /etc/mini-connector' "$work/control/postinst"
check "postinst never enables or starts the service" bash -c '! grep -Eq "systemctl (enable|start|restart)|enable --now" "$1"' _ "$work/control/postinst"
check "postrm purge removes config, state and logs" grep -q 'rm -rf /etc/mini-connector /var/lib/mini-connector /var/log/mini-connector' "$work/control/postrm"

echo "==> 2. dpkg -x into a throwaway root"
dpkg-deb -x "$deb" "$root"
for file in \
    usr/bin/mini-connector \
    lib/systemd/system/mini-connector.service \
    usr/share/bash-completion/completions/mini-connector \
    usr/share/zsh/vendor-completions/_mini-connector \
    usr/share/fish/vendor_completions.d/mini-connector.fish \
    usr/share/man/man1/mini-connector.1.gz \
    usr/share/man/man1/mini-connector-service.1.gz \
    usr/share/doc/mini-connector/INSTALL-linux.md \
    usr/share/doc/mini-connector/packaging.md; do
    check "/$file" test -s "$root/$file"
done
check "/usr/bin/mini-connector is executable" test -x "$root/usr/bin/mini-connector"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
check "mini-connector --version from the install path says $version" \
    bash -c '[[ "$("$1" --version)" == "mini-connector $2" ]]' _ "$root/usr/bin/mini-connector" "$version"
unit="$root/lib/systemd/system/mini-connector.service"
check "the unit runs /usr/bin/mini-connector with /etc/mini-connector/config.json" \
    grep -qx 'ExecStart="/usr/bin/mini-connector" start --config "/etc/mini-connector/config.json"' "$unit"
check "the unit runs as User=mini-connector" grep -qx 'User=mini-connector' "$unit"
check "the unit is finished (no TEMPLATE, no placeholder)" bash -c '! grep -Eq "TEMPLATE|\{\{" "$1"' _ "$unit"
if command -v systemd-analyze >/dev/null 2>&1; then
    # The packaged unit, its ExecStart= pointed at the binary in the throwaway root (so verify
    # checks that it exists and is executable); everything else byte for byte.
    mkdir -p "$work/verify"
    sed "s#^ExecStart=\"/usr/bin/mini-connector\"#ExecStart=\"$root/usr/bin/mini-connector\"#" "$unit" \
        >"$work/verify/mini-connector.service"
    if verify="$(systemd-analyze verify "$work/verify/mini-connector.service" 2>&1)" &&
        ! grep -q 'mini-connector.service' <<<"$verify"; then
        echo "ok   systemd-analyze verify"
    else
        fail "systemd-analyze verify: $verify"
    fi
else
    echo "skip systemd-analyze verify (not installed)"
fi
check "the bash completion knows \`service install\`" grep -q 'mini__connector__subcmd__service__subcmd__install' "$root/usr/share/bash-completion/completions/mini-connector"
if command -v groff >/dev/null 2>&1; then
    check "the man page renders" bash -c 'zcat "$1" | groff -man -Tutf8 -ww -z' _ "$root/usr/share/man/man1/mini-connector.1.gz"
fi

echo "==> 3. checksums and signatures"
check "SHA256SUMS lists the .deb" grep -q "  $(basename "$deb")\$" "$out/SHA256SUMS"
check "sha256sum -c SHA256SUMS" bash -c 'cd "$1" && sha256sum --quiet -c SHA256SUMS' _ "$out"
for file in "$deb" "$out/SHA256SUMS"; do
    check "minisign -V $(basename "$file")" minisign -Vq -p "$out/ephemeral-release.pub" -m "$file"
done
cp "$deb" "$work/tampered.deb"
cp "$deb.minisig" "$work/tampered.deb.minisig"
printf '\x00' | dd of="$work/tampered.deb" bs=1 seek=200 conv=notrunc status=none
check "a tampered .deb fails minisign -V" bash -c '! minisign -Vq -p "$1" -m "$2"' _ "$out/ephemeral-release.pub" "$work/tampered.deb"
check "a signature by another key fails minisign -V" bash -c '! minisign -Vq -p "$1" -m "$2"' _ packaging/keys/release.pub "$deb"

echo "==> 4. the Windows installer source (wixl)"
if command -v wixl >/dev/null 2>&1; then
    mkdir -p "$work/msi"
    printf 'MZ stand-in\n' >"$work/msi/mini-connector.exe"
    cp README.md docs/INSTALL-windows.md "$work/msi/"
    # The table goes to a file first: `msiinfo | grep -q` under pipefail fails when grep exits
    # before msiinfo has written everything (SIGPIPE).
    if (cd "$work/msi" && wixl --arch x64 -D Version="$version" -o test.msi "$OLDPWD/packaging/windows/mini-connector.wxs") \
        2>"$work/msi/log" &&
        msiinfo export "$work/msi/test.msi" File >"$work/msi/files" 2>>"$work/msi/log" &&
        grep -q 'mini-connector.exe' "$work/msi/files"; then
        echo "ok   packaging/windows/mini-connector.wxs builds an MSI with mini-connector.exe"
    else
        fail "wixl: $(cat "$work/msi/log")"
    fi
else
    echo "skip wixl (apt-get install wixl)"
fi

if [[ "${MC_PACKAGE_INSTALL:-0}" == 1 ]]; then
    echo "==> 5. dpkg -i on this (disposable) machine, then dpkg --purge"
    if dpkg -s mini-connector >/dev/null 2>&1; then
        fail "mini-connector is already installed here; not touching it"
    else
        had_account=0
        getent passwd mini-connector >/dev/null && had_account=1
        DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
        check "the mini-connector account exists" getent passwd mini-connector
        check "its shell is nologin" bash -c '[[ "$(getent passwd mini-connector | cut -d: -f7)" == /usr/sbin/nologin ]]'
        check "/etc/mini-connector is mini-connector:mini-connector 0750" bash -c '[[ "$(stat -c %U:%G:%a /etc/mini-connector)" == mini-connector:mini-connector:750 ]]'
        check "/var/lib/mini-connector is 0700" bash -c '[[ "$(stat -c %U:%a /var/lib/mini-connector)" == mini-connector:700 ]]'
        check "/var/log/mini-connector is 0750" bash -c '[[ "$(stat -c %U:%a /var/log/mini-connector)" == mini-connector:750 ]]'
        check "/usr/bin/mini-connector --version" /usr/bin/mini-connector --version
        if [[ -d /run/systemd/system ]]; then
            check "the service is not enabled" bash -c '! systemctl is-enabled --quiet mini-connector'
            check "the service is not running" bash -c '! systemctl is-active --quiet mini-connector'
        fi
        check "man mini-connector" bash -c 'man -w mini-connector'
        touch /etc/mini-connector/config.json /var/lib/mini-connector/queue.db
        dpkg -r mini-connector >/dev/null
        check "dpkg -r keeps the configuration and state" test -e /etc/mini-connector/config.json -a -e /var/lib/mini-connector/queue.db
        check "dpkg -r removes the binary" test ! -e /usr/bin/mini-connector
        dpkg --purge mini-connector >/dev/null
        check "dpkg --purge removes /etc/mini-connector" test ! -e /etc/mini-connector
        check "dpkg --purge removes /var/lib/mini-connector" test ! -e /var/lib/mini-connector
        check "dpkg --purge removes /var/log/mini-connector" test ! -e /var/log/mini-connector
        # The package keeps the account (Debian policy); this test made it, so it removes it.
        ((had_account)) || deluser --system --quiet mini-connector >/dev/null 2>&1 || true
    fi
else
    echo "skip dpkg -i / --purge on this machine (set MC_PACKAGE_INSTALL=1 on a disposable root machine)"
fi

if ((failures)); then
    echo "test-package.sh: $failures check(s) FAILED" >&2
    exit 1
fi
echo "test-package.sh: all package checks passed ($((SECONDS - started)) s)"
