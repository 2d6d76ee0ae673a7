# The desktop app's build and test tools, on Debian/Ubuntu. Sourced (by .ci/run and
# scripts/test.sh), not run; idempotent: a machine that has everything costs one dpkg query.
#  - FLTK (the `gui` crate, default feature of the binary) builds from its bundled C++ source:
#    a C++ compiler, CMake >= 3.28 (Debian 12 ships 3.25: we take PyPI's wheel), X11/Xft/pango
#    headers.
#  - libdbus-1-dev + pkg-config: the binaries compile libdbus in (vendored), but a test build of
#    the tray crate alone links the system libdbus (its own feature set, without `vendored`).
#  - The GUI tests run under Xvfb, driven by xdotool, photographed by ImageMagick.

gui_pkgs=(g++ pkg-config libdbus-1-dev libx11-dev libxext-dev libxft-dev libxinerama-dev libxcursor-dev libxrender-dev libxfixes-dev
    libpango1.0-dev libgl1-mesa-dev libglu1-mesa-dev xvfb xdotool imagemagick)
python3 -m pip --version >/dev/null 2>&1 || gui_pkgs+=(python3-pip)
gui_missing=()
for p in "${gui_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || gui_missing+=("$p")
done
if [ ${#gui_missing[@]} -gt 0 ]; then
    echo "==> installing ${gui_missing[*]} (apt, for the desktop app)"
    gui_sudo=""
    [ "$(id -u)" -ne 0 ] && gui_sudo="sudo"
    if ! DEBIAN_FRONTEND=noninteractive $gui_sudo apt-get install -y -qq "${gui_missing[@]}" >/dev/null 2>&1; then
        $gui_sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $gui_sudo apt-get install -y -qq "${gui_missing[@]}" >/dev/null
    fi
fi

gui_cmake_ok() {
    local v
    v=$(cmake --version 2>/dev/null | head -1 | awk '{print $3}')
    [ -n "$v" ] && [ "$(printf '%s\n3.28\n' "$v" | sort -V | head -1)" = "3.28" ]
}
if ! gui_cmake_ok; then
    echo "==> installing CMake >= 3.28 from PyPI (FLTK needs it; this Debian has $(cmake --version 2>/dev/null | head -1 || echo none))"
    python3 -m pip install --quiet --user 'cmake>=3.28' 2>/dev/null \
        || python3 -m pip install --quiet --user --break-system-packages 'cmake>=3.28'
    export PATH="$HOME/.local/bin:$PATH"
    hash -r
    gui_cmake_ok || { echo "CMake >= 3.28 is needed to build FLTK and could not be installed" >&2; exit 1; }
fi
