#!/usr/bin/env bash
# Fuzzes every decoder for a while and fails on the first crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 20 s, every target)
#
# Targets are the harnesses of tests/decoder-regressions (listed by `cargo fuzz list` in fuzz/).
# Seeds come from the real writers and from shared/fixtures/vcenter-soap (never committed);
# the corpus grows in fuzz/corpus/<target>, which git ignores. A crash leaves its input in
# fuzz/artifacts/<target>/: minimise it (`cargo fuzz tmin <target> <file>`), save it under
# fuzz/regressions/<target>/ and tests/decoder-regressions replays it from then on.
#
# Builds are optimised with debug assertions and overflow checks on (-O -a): an arithmetic
# overflow on bad input is a crash, as it is in the test builds.
# Environment: FUZZ_SANITIZER (address|none, default address), FUZZ_MAX_LEN (default 65536),
# FUZZ_FEATURES (cargo feature flags for fuzz/, e.g. --no-default-features to build only the
# repository and descriptor targets, which compiles much faster).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes unstable flags to rustc; the stable toolchain accepts them this way.
export RUSTC_BOOTSTRAP=1

cargo run -q -p decoder-regressions --bin seed-corpus -- fuzz/corpus >/dev/null

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
read -r -a features <<<"${FUZZ_FEATURES:-}"
cargo fuzz build -O -a -s "$sanitizer" "${features[@]}"

# Run the built binaries directly: `cargo fuzz run` would rebuild whenever a source changed.
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
    echo "== $t: ${seconds}s"
    log="${TMPDIR:-/tmp}/fuzz-$t.log"
    status=0
    "$bin/$t" -artifact_prefix="artifacts/$t/" "corpus/$t" "regressions/$t" \
        -max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-65536}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(#[0-9]+\s+DONE|stat::(number_of_executed_units|average_exec_per_sec)|SUMMARY)|panicked at" "$log" || true
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t crashed (exit $status); input in fuzz/artifacts/$t/, log in $log"
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds}s each, no crash"
