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
# Environment: FUZZ_SANITIZER (address|none, default address), FUZZ_MAX_LEN (default 65536).
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
cargo fuzz build -O -a -s "$sanitizer"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "regressions/$t"
    echo "== $t: ${seconds}s"
    if ! cargo fuzz run -O -a -s "$sanitizer" "$t" "corpus/$t" "regressions/$t" -- \
        -max_total_time="$seconds" -max_len="${FUZZ_MAX_LEN:-65536}" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "/tmp/fuzz-$t.log" | grep -E "^(#[0-9]+\s+DONE|stat::|==[0-9]+==|SUMMARY|thread .* panicked|Done)"; then
        :
    fi
    if grep -qE "^(==[0-9]+== ?ERROR|SUMMARY: libFuzzer)|deadly signal|panicked at" "/tmp/fuzz-$t.log"; then
        failed+=("$t")
        echo "!! $t crashed; input in fuzz/artifacts/$t/, log in /tmp/fuzz-$t.log"
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds}s each, no crash"
