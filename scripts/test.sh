#!/usr/bin/env bash
# The test command: installs what is needed, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A CI machine may have little disk: no incremental caches (a one-shot build gains nothing from
# them) and line tables only as debug info keep the build tree to a fraction of its default size.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
export CARGO_PROFILE_TEST_DEBUG=line-tables-only
disk() { echo "test: $1: $(df -h --output=avail . | tail -1 | tr -d ' ') free, build tree $(du -sh target 2>/dev/null | cut -f1)"; }
disk start
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked
disk "after the tests"
# A short fuzz of the repository and descriptor decoders (scripts/fuzz.sh runs every target).
FUZZ_FEATURES=--no-default-features bash scripts/fuzz.sh 5 repo_blob repo_fixed_index repo_manifest repo_config repo_key_file vmdk_descriptor
disk end
