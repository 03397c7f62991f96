#!/bin/sh
# RUSTC_WRAPPER for the fuzz build (scripts/fuzz.sh sets it): compiles the cryptographic
# primitives without libFuzzer's coverage instrumentation and without debug assertions (so
# without overflow checks), everything else unchanged.
#
# The targets fuzz the protocol, not the primitives, and the instrumentation (trace-compare
# hooks above all) in X25519's field arithmetic took ~60 % of engine_receive's time, and
# overflow checks in its 128-bit products much of the rest. cargo-fuzz
# passes its flags in RUSTFLAGS, which apply to every crate and come after any per-profile
# flags, so they can only be taken out here.
rustc="$1"
shift
case " $* " in
*" --crate-name curve25519_dalek "* | *" --crate-name x25519_dalek "* | \
*" --crate-name chacha20 "* | *" --crate-name poly1305 "* | \
*" --crate-name chacha20poly1305 "* | *" --crate-name blake2s_simd "* | \
*" --crate-name ring "*)
    for arg; do
        shift
        case "$arg" in
        -Cpasses=sancov-module | -Cllvm-args=-sanitizer-coverage-* | -Cdebug-assertions) ;;
        *) set -- "$@" "$arg" ;;
        esac
    done
    ;;
esac
exec "$rustc" "$@"
