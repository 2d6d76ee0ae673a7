#!/usr/bin/env bash
# Release artefacts for Mini Connector: binaries, packages, checksums, signatures.
#
# Usage: scripts/release.sh [--profile PROFILE] [--out DIR] [--sign-key PATH]
#                           [--deb-only] [--no-build] [--no-msi] [--no-rpm]
#
#   --profile PROFILE  cargo profile (default `release`: fat LTO, stripped, slow to build; CI
#                      uses `dev`, which packages the unoptimised debug binary)
#   --out DIR          where the artefacts go (default $CARGO_TARGET_DIR/release-artifacts)
#   --sign-key PATH    minisign secret key; its password comes from $MINISIGN_PASSWORD, else
#                      minisign asks on the terminal (an unencrypted key needs none). The secret
#                      key never lives in this repository. WITHOUT --sign-key a throwaway key pair
#                      is generated and everything is signed with it: fine for CI, useless to
#                      anyone who trusts packaging/keys/release.pub (the agent's updater does).
#   --deb-only         only the headless binary, the .deb, SHA256SUMS and signatures (CI)
#   --no-build         package the binaries already built for PROFILE
#   --no-msi, --no-rpm skip those (they are skipped anyway, with the reason, when their tools
#                      or the Windows target are missing)
#
# Produces in DIR (VERSION from Cargo.toml):
#   mini-connector_VERSION-1_amd64.deb           cargo-deb: the HEADLESS agent in /usr/bin, its
#                                                systemd unit, completions, man pages, the
#                                                mini-connector system user (packaging/debian/)
#   mini-connector-VERSION-1.x86_64.rpm          cargo-generate-rpm, when installed
#   mini-connector-VERSION-x86_64-linux.tar.gz   desktop build (gui) + connector-gateway
#   mini-connector-headless-VERSION-x86_64-linux.tar.gz
#   mini-connector-VERSION-x86_64.msi            wixl (msitools) from packaging/windows/
#                                                mini-connector.wxs, when the Windows target
#                                                (x86_64-pc-windows-gnu) and wixl are there
#   SHA256SUMS, and FILE.minisig for every artefact and for SHA256SUMS
#
# Needs: cargo, cargo-deb (installed with `cargo install cargo-deb --locked` when missing),
# minisign (apt), gzip, sha256sum; optionally wixl (apt: wixl), cargo-generate-rpm.
# Documented in README.md ("Releases") and packaging/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
out=""
sign_key=""
deb_only=0
build=1
msi=1
rpm=1
while (($#)); do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --sign-key) sign_key="$2"; shift 2 ;;
        --deb-only) deb_only=1; shift ;;
        --no-build) build=0; shift ;;
        --no-msi) msi=0; shift ;;
        --no-rpm) rpm=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

target_dir="${CARGO_TARGET_DIR:-target}"
case "$profile" in
    dev) profile_dir=debug ;;
    *) profile_dir="$profile" ;;
esac
bin_dir="$target_dir/$profile_dir"
out="${out:-$target_dir/release-artifacts}"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
# cargo-deb reads the generated files from target/release/package-assets (its alias for
# $CARGO_TARGET_DIR/release) whatever the profile: it is always run without --profile, since it
# refuses the dev profile.
assets="$target_dir/release/package-assets"
started=$SECONDS

say() { echo "==> $*"; }
command -v minisign >/dev/null 2>&1 || { echo "release.sh: minisign is not installed (apt-get install minisign)" >&2; exit 2; }
skip() { echo "--> SKIPPED: $*"; }

mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.rpm "$out"/*.tar.gz "$out"/*.msi "$out"/*.minisig "$out"/SHA256SUMS \
    "$out"/ephemeral-release.pub
rm -rf "$assets"
mkdir -p "$assets/bin" "$assets/completions" "$assets/man"

# ---- binaries ------------------------------------------------------------------------------
# The headless agent first (servers: no FLTK/X11), set aside; then the desktop build, which is
# left in $bin_dir as cargo would leave it.
if ((build)); then
    say "cargo build --profile $profile --no-default-features --bin mini-connector (headless)"
    cargo build --profile "$profile" --no-default-features --bin mini-connector
fi
cp "$bin_dir/mini-connector" "$assets/bin/mini-connector"
if [[ "$profile" != release ]]; then
    # A debug build carries ~250 MB of debug info: packaged as is, compressing it takes minutes.
    strip --strip-debug "$assets/bin/mini-connector"
fi
if ldd "$assets/bin/mini-connector" | grep -Ei 'libX|fontconfig|fltk|pango|cairo|freetype|libGL'; then
    echo "FAIL: the headless binary links GUI libraries (above): was it built with --no-default-features?" >&2
    exit 1
fi
headless="$assets/bin/mini-connector"
"$headless" --version

# ---- generated files: unit, completions, man pages -----------------------------------------
say "generating the systemd unit, shell completions and man pages"
"$headless" generate systemd-unit >"$assets/mini-connector.service"
for shell in bash zsh fish; do
    "$headless" generate completions "$shell" --out "$assets/completions" >/dev/null
done
"$headless" generate man --out "$assets/man" >/dev/null
gzip -9n "$assets"/man/*.1

# ---- .deb ----------------------------------------------------------------------------------
if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked
fi
say "cargo deb (the $profile build)"
# --no-strip: the release profile strips already; a debug build was stripped of its debug info
# above (--fast: a quick xz level for those larger binaries).
deb_flags=(--no-build --no-strip --output "$out/")
if [[ "$profile" != release ]]; then
    deb_flags+=(--fast)
fi
cargo deb "${deb_flags[@]}"

if ((!deb_only)); then
    # ---- the desktop build + the gateway (tarballs) --------------------------------------------
    if ((build)); then
        say "cargo build --profile $profile --bin mini-connector --bin connector-gateway (desktop build)"
        cargo build --profile "$profile" -p mini-connector --bin mini-connector -p gateway --bin connector-gateway
    fi
    for variant in desktop headless; do
        if [[ $variant == desktop ]]; then
            name="mini-connector-$version-x86_64-linux"
            agent="$bin_dir/mini-connector"
        else
            name="mini-connector-headless-$version-x86_64-linux"
            agent="$headless"
        fi
        stage="$assets/stage/$name"
        mkdir -p "$stage/completions" "$stage/man" "$stage/systemd"
        install -m 0755 "$agent" "$stage/mini-connector"
        [[ $variant == desktop ]] && install -m 0755 "$bin_dir/connector-gateway" "$stage/connector-gateway"
        cp "$assets"/completions/* "$stage/completions/"
        cp "$assets"/man/* "$stage/man/"
        cp "$assets/mini-connector.service" "$stage/systemd/"
        cp README.md docs/INSTALL-linux.md "$stage/"
        tar -C "$assets/stage" --owner=0 --group=0 --numeric-owner -czf "$out/$name.tar.gz" "$name"
    done

    # ---- .rpm ----------------------------------------------------------------------------------
    if ((rpm)) && cargo generate-rpm --version >/dev/null 2>&1; then
        say "cargo generate-rpm"
        cargo generate-rpm --profile "$profile" --output "$out/"
    elif ((rpm)); then
        skip ".rpm: cargo-generate-rpm is not installed (the .deb and the headless tarball cover RHEL for now)"
    fi

    # ---- Windows MSI ---------------------------------------------------------------------------
    if ((msi)); then
        if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu; then
            skip "MSI: the Rust target x86_64-pc-windows-gnu is not installed"
        elif ! command -v wixl >/dev/null 2>&1; then
            skip "MSI: wixl is not installed (apt-get install wixl); the source is packaging/windows/mini-connector.wxs"
        else
            if ((build)); then
                say "cargo build --profile $profile --target x86_64-pc-windows-gnu --no-default-features (Windows service build)"
                cargo build --profile "$profile" --target x86_64-pc-windows-gnu --no-default-features --bin mini-connector
            fi
            say "wixl: mini-connector-$version-x86_64.msi"
            # wixl takes the files' Source= paths relative to the current directory.
            msi_stage="$assets/msi"
            mkdir -p "$msi_stage"
            cp "$target_dir/x86_64-pc-windows-gnu/$profile_dir/mini-connector.exe" README.md docs/INSTALL-windows.md \
                "$msi_stage/"
            msi_out="$(cd "$out" && pwd)/mini-connector-$version-x86_64.msi"
            (cd "$msi_stage" && wixl --arch x64 -D Version="$version" -o "$msi_out" \
                "$OLDPWD/packaging/windows/mini-connector.wxs")
        fi
    fi
fi

# ---- checksums and signatures --------------------------------------------------------------
say "SHA256SUMS"
(
    cd "$out"
    shopt -s nullglob
    files=(*.deb *.rpm *.tar.gz *.msi)
    sha256sum "${files[@]}" >SHA256SUMS
)
keep_tmp=""
if [[ -z "$sign_key" ]]; then
    keep_tmp="$(mktemp -d)"
    trap 'rm -rf "$keep_tmp"' EXIT
    sign_key="$keep_tmp/ephemeral.key"
    minisign -G -W -f -p "$out/ephemeral-release.pub" -s "$sign_key" >/dev/null
    cat >&2 <<EOF

  ************************************************************************************
  *  NO --sign-key: the artefacts are signed with a THROWAWAY key generated just now. *
  *  Its public half is $out/ephemeral-release.pub; the secret half is deleted.
  *  Nothing that trusts packaging/keys/release.pub (the agent's updater) accepts     *
  *  these signatures. Release builds: scripts/release.sh --sign-key PATH             *
  ************************************************************************************

EOF
    pub="$out/ephemeral-release.pub"
else
    pub="packaging/keys/release.pub"
fi
say "minisign: signing SHA256SUMS and every artefact"
sign() {
    local file="$1"
    if [[ -n "${MINISIGN_PASSWORD:-}" ]]; then
        printf '%s\n' "$MINISIGN_PASSWORD" | minisign -S -s "$sign_key" -m "$file" -x "$file.minisig" >/dev/null
    else
        # An unencrypted key signs at once; an encrypted one makes minisign ask on the terminal.
        minisign -S -s "$sign_key" -m "$file" -x "$file.minisig" >/dev/null
    fi
}
while read -r _ file; do
    sign "$out/$file"
done <"$out/SHA256SUMS"
sign "$out/SHA256SUMS"
say "checking: sha256sum -c and minisign -V against $pub"
(cd "$out" && sha256sum --quiet -c SHA256SUMS)
for sig in "$out"/*.minisig; do
    minisign -Vq -p "$pub" -m "${sig%.minisig}"
done
echo
ls -l "$out"
echo "release.sh: done in $((SECONDS - started)) s (profile $profile)"
