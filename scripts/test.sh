#!/usr/bin/env bash
# The test command: installs what is needed, then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked
cargo test --workspace --locked
FUZZ_FEATURES=--no-default-features bash scripts/fuzz.sh 5 repo_blob repo_fixed_index repo_manifest repo_config repo_key_file vmdk_descriptor # short fuzz of the repository and descriptor decoders; scripts/fuzz.sh runs every target
