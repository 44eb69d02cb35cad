#!/usr/bin/env bash
# Set up napari-cellina on a fresh Debian machine: system libraries for Qt and Xvfb,
# a virtual environment at .venv with the tested dependency set, and the package
# itself (editable). With --launch, open napari on the built-in sample tissue.
set -euo pipefail

cd "$(dirname "$0")/.."
launch=0
for arg in "$@"; do
    case "$arg" in
        --launch) launch=1 ;;
        -h|--help) echo "usage: scripts/setup.sh [--launch]"; exit 0 ;;
        *) echo "scripts/setup.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

# Qt's xcb platform and a virtual X server for headless rendering and tests.
debian_packages=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0
    libxcb-render-util0 libxcb-cursor0 libxcb-shape0 libxkbcommon-x11-0 libdbus-1-3
    libfontconfig1 libegl1 libgl1)
if command -v apt-get >/dev/null 2>&1; then
    missing=()
    for pkg in "${debian_packages[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
else
    echo "scripts/setup.sh: no apt-get here; install Xvfb and Qt's xcb libraries yourself" >&2
fi

python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi

# torch is pinned in the same step as everything else: on its own, scvi-tools would pull
# a CUDA build of several GB. pip honours PIP_FIND_LINKS for a local folder of wheels.
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c requirements/constraints.txt "torch==2.13.0" -e ".[gui,test]"

if ((launch)); then
    exec .venv/bin/cellina view
fi
