#!/usr/bin/env bash
# The README's first command: installs what is needed, builds safekeeping, starts the lab (a
# simulated vCenter and a fake VDDK), creates a VM with two disks, backs it up (full, then a
# CBT incremental), restores it as a new VM and compares the disk digests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
lab_dir="$root/lab-run"

step() { printf '\n==> %s\n' "$*"; }

step "installing what is needed"
bash scripts/setup.sh

# DEMO_PROFILE=dev uses a debug build (faster to build, slower to run).
profile="${DEMO_PROFILE:-release}"
step "building ($profile)"
cargo build --profile "$profile" --workspace
case "$profile" in dev) out=debug ;; *) out="$profile" ;; esac
bin="${CARGO_TARGET_DIR:-$root/target}/$out"
lab() { "$bin/safekeeping-lab" "$@" --dir "$lab_dir"; }
sk() { "$bin/safekeeping" --config "$lab_dir/safekeeping.toml" "$@"; }

if [ -e "$lab_dir" ]; then
  step "removing the lab and repository of an earlier demo run ($lab_dir)"
  [ -e "$lab_dir/lab.json" ] && { lab down >/dev/null 2>&1 || true; }
  rm -rf "$lab_dir"
fi
step "starting the lab in $lab_dir"
"$bin/safekeeping-lab" up --dir "$lab_dir"
trap 'step "stopping the lab"; lab down --keep-repo >/dev/null || true' EXIT

step "creating VM demo: two disks (256 MiB, 128 MiB), two NICs, powered on"
lab create-vm --name demo --disk 256M --disk 128M --nic "VM Network" --nic "DC0_DVPG0"
lab guest-write --vm demo --disk 0 --offset 0 --len 48M --seed 1
lab guest-write --vm demo --disk 1 --offset 16M --len 16M --seed 2

step "safekeeping repo init"
sk repo init

step "safekeeping backup vm:demo (full)"
sk backup vm:demo
full=($(lab disk-digest --vm demo --disk 0) $(lab disk-digest --vm demo --disk 1))

step "the guest writes more (over old data, new data, and zeros)"
lab guest-write --vm demo --disk 0 --offset 8M --len 4M --seed 3
lab guest-write --vm demo --disk 0 --offset 200M --len 8M --seed 4
lab guest-write --vm demo --disk 1 --offset 20M --len 2M --zero
latest=($(lab disk-digest --vm demo --disk 0) $(lab disk-digest --vm demo --disk 1))

step "safekeeping backup vm:demo (incremental through changed block tracking)"
sk backup vm:demo

step "safekeeping list"
sk list

step "safekeeping restore vm:demo --name demo-restored"
sk restore vm:demo --name demo-restored
restored=($(lab disk-digest --vm demo-restored --disk 0) $(lab disk-digest --vm demo-restored --disk 1))

step "comparing SHA-256 of every disk (original at the last backup vs restored)"
ok=1
for i in 0 1; do
  mark="same"
  [ "${latest[$i]}" = "${restored[$i]}" ] || { mark="DIFFERENT"; ok=0; }
  printf '  disk %s  original %s\n          restored %s  %s\n' "$i" "${latest[$i]}" "${restored[$i]}" "$mark"
done
printf '  (the full backup had disk 0 %s, disk 1 %s)\n' "${full[0]:0:16}..." "${full[1]:0:16}..."

step "safekeeping check --read-data"
sk check --read-data

if [ "$ok" = 1 ]; then
  step "demo succeeded: the restored VM's disks are identical to the backed-up ones"
else
  step "demo FAILED: digests differ"
  exit 1
fi
