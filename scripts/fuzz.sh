#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60) and prints, per target,
# how many inputs were executed and how many crashes it found.
#
#   scripts/fuzz.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS    targets to run, space separated (default: all of them)
#   FUZZ_SANITIZER  none (default) or address. ferrowg's crates forbid unsafe code but for the
#                   OS wrappers and ferrowg-chacha's SIMD loads/stores, so the fuzzers mostly
#                   look for panics (bounds, overflow: debug assertions are on) and broken
#                   invariants; run aead_batch with address now and then for the loads/stores.
#   FUZZ_TOOLCHAIN  a rustup toolchain to build with (default: the active one). On a stable
#                   toolchain RUSTC_BOOTSTRAP=1 unlocks the -Z flags cargo-fuzz passes.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Inputs that add coverage go to
# fuzz/corpus/TARGET (not committed); the committed seeds in fuzz/seeds/TARGET are read too.
# A crash stops its target (libFuzzer's default) and is saved in fuzz/artifacts/TARGET/;
# reproduce it with
#   RUSTC_BOOTSTRAP=1 RUSTC_WRAPPER=$PWD/fuzz/rustc-wrapper.sh \
#       cargo fuzz run --fuzz-dir fuzz -s none TARGET fuzz/artifacts/TARGET/crash-...
# (fuzz/README.md describes the targets.)
# Exit status: 0 if no target crashed, 1 if one did, 2 if something else failed.
set -euo pipefail

seconds=${1:-60}
case $seconds in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
targets=${FUZZ_TARGETS:-messages engine_receive uapi_request config_file aead_batch gro}
sanitizer=${FUZZ_SANITIZER:-none}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "$0: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
toolchain=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
fi
export RUSTC_BOOTSTRAP=1
# Keeps coverage instrumentation and debug assertions out of the crypto primitives (see it).
export RUSTC_WRAPPER="$fuzz/rustc-wrapper.sh"
host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
target_dir="$fuzz/target/${FUZZ_TOOLCHAIN:-default}-$sanitizer"

# One build for all targets.
echo "building fuzz targets (sanitizer: $sanitizer)..." >&2
cargo "${toolchain[@]}" fuzz build --fuzz-dir "$fuzz" --sanitizer "$sanitizer" \
    --target-dir "$target_dir" >&2

declare -A execs crashes status
result=0
for t in $targets; do
    bin="$target_dir/$host/release/$t"
    corpus="$fuzz/corpus/$t"
    artifacts="$fuzz/artifacts/$t"
    seeds="$fuzz/seeds/$t"
    log="$fuzz/artifacts/$t.log"
    mkdir -p "$corpus" "$artifacts"
    stamp=$(mktemp)
    echo "fuzzing $t for ${seconds}s..." >&2
    set +e
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" "$corpus" "$seeds" >"$log" 2>&1
    rc=$?
    set -e
    new=$(find "$artifacts" -type f -newer "$stamp")
    rm -f "$stamp"
    execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    crashes[$t]=$(printf '%s' "$new" | grep -c . || true)
    if [ "${crashes[$t]}" -gt 0 ]; then
        status[$t]="CRASH: $(printf '%s' "$new" | head -n 1) (log: $log)"
        result=1
    elif [ "$rc" -ne 0 ]; then
        status[$t]="failed, exit $rc (log: $log)"
        [ "$result" -eq 1 ] || result=2
    else
        status[$t]="ok"
    fi
done

printf '%-16s %12s %8s  %s\n' target executions crashes status
for t in $targets; do
    printf '%-16s %12s %8s  %s\n' "$t" "${execs[$t]:-?}" "${crashes[$t]}" "${status[$t]}"
done
exit $result
