#!/usr/bin/env bash
# Throughput, efficiency and latency of ferrowgd against the other user-space WireGuard
# implementations, all in ONE run on the same machine (figures from different runs or machines
# are not comparable; ratios within a run are).
#
# Topology: two network namespaces joined by a veth pair; both tunnel ends run the same
# implementation; iperf3 runs through the tunnel.
#
# Measured per implementation:
#   - TCP Gbit/s (iperf3, one stream, and four parallel streams), receiver side;
#   - CPU-seconds of both daemons per GB delivered (utime+stime from /proc, the figure that
#     does not depend on the number of cores);
#   - UDP 64-byte payload flood (iperf3 -u -b 0 -l 64): packets/s delivered;
#   - ping RTT through the tunnel, idle and while the TCP stream runs.
#
# Usage: sudo bench/netns-bench.sh [-t SECONDS] [-r ROUNDS] [-o FILE.md] [IMPL...]
#   -r ROUNDS: measure every implementation ROUNDS times, round-robin (so that a slow spell of
#   the machine hits all of them), and report the median of each figure (default 1).
#   IMPL: ferrowgd, wireguard-go-newest, wireguard-go-debian, boringtun, veth (bare ceiling)
# Environment: FERROWGD (default target/release/ferrowgd), WIREGUARD_GO_NEWEST (default
#   $FERROWG_PEERS_DIR/wireguard-go), WIREGUARD_GO_DEBIAN (default /usr/bin/wireguard-go),
#   BORINGTUN (default boringtun-cli on PATH or ~/.cargo/bin), WG (default wg on PATH).
set -euo pipefail

secs=5
rounds=1
out=""
while getopts "t:r:o:" opt; do
    case $opt in
        t) secs=$OPTARG ;;
        r) rounds=$OPTARG ;;
        o) out=$OPTARG ;;
        *) echo "usage: $0 [-t SECONDS] [-r ROUNDS] [-o FILE.md] [IMPL...]" >&2; exit 1 ;;
    esac
done
shift $((OPTIND - 1))

[[ $(id -u) -eq 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)
FERROWGD=${FERROWGD:-$root/target/release/ferrowgd}
WIREGUARD_GO_NEWEST=${WIREGUARD_GO_NEWEST:-${FERROWG_PEERS_DIR:+$FERROWG_PEERS_DIR/wireguard-go}}
WIREGUARD_GO_DEBIAN=${WIREGUARD_GO_DEBIAN:-/usr/bin/wireguard-go}
BORINGTUN=${BORINGTUN:-$(command -v boringtun-cli || echo "$HOME/.cargo/bin/boringtun-cli")}
WG=${WG:-$(command -v wg)}
for tool in iperf3 ping "$WG"; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

impls=("$@")
if ((${#impls[@]} == 0)); then
    impls=(veth ferrowgd)
    [[ -n "$WIREGUARD_GO_NEWEST" && -x "$WIREGUARD_GO_NEWEST" ]] && impls+=(wireguard-go-newest)
    [[ -x "$WIREGUARD_GO_DEBIAN" ]] && impls+=(wireguard-go-debian)
    [[ -x "$BORINGTUN" ]] && impls+=(boringtun)
fi

A=fwgbench-a
B=fwgbench-b
IF_A=fwgbencha
IF_B=fwgbenchb
pids=()

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for ns in $A $B; do
        for p in $(ip netns pids $ns 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del $ns 2>/dev/null || true
    done
    rm -f /var/run/wireguard/$IF_A.sock /var/run/wireguard/$IF_B.sock
    pids=()
}
trap cleanup EXIT

topology() {
    cleanup
    # wireguard-go expects the socket directory to exist.
    mkdir -p /var/run/wireguard
    ip netns add $A
    ip netns add $B
    ip link add veth-a netns $A type veth peer name veth-b netns $B
    ip -n $A addr add 192.0.2.1/24 dev veth-a
    ip -n $B addr add 192.0.2.2/24 dev veth-b
    for ns in $A $B; do ip -n $ns link set lo up; done
    ip -n $A link set veth-a up
    ip -n $B link set veth-b up
}

# Starts implementation $1 as interface $3 in namespace $2, in the foreground (so we know the
# PID whose CPU time we read), and waits for its UAPI socket.
start() {
    local impl=$1 ns=$2 ifname=$3
    local log=/tmp/$ifname.bench.log
    case $impl in
        ferrowgd) ip netns exec "$ns" "$FERROWGD" -f "$ifname" 2>"$log" & ;;
        wireguard-go-newest) ip netns exec "$ns" "$WIREGUARD_GO_NEWEST" -f "$ifname" >"$log" 2>&1 & ;;
        wireguard-go-debian) ip netns exec "$ns" "$WIREGUARD_GO_DEBIAN" -f "$ifname" >"$log" 2>&1 & ;;
        boringtun) ip netns exec "$ns" "$BORINGTUN" -f --disable-drop-privileges "$ifname" >"$log" 2>&1 & ;;
    esac
    pids+=($!)
    for _ in $(seq 100); do
        ip netns exec "$ns" "$WG" show "$ifname" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$impl did not start; log:" >&2
    cat "$log" >&2
    return 1
}

# The daemon's own PID (ip netns exec execs, so $! is the daemon).
cpu_ticks() {
    local total=0 p
    for p in "$@"; do
        local f
        f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null || echo "0 0")
        total=$((total + ${f% *} + ${f#* }))
    done
    echo $total
}

tunnel() {
    local impl=$1
    start "$impl" $A $IF_A
    start "$impl" $B $IF_B
    local ka kb
    ka=$("$WG" genkey)
    kb=$("$WG" genkey)
    ip netns exec $A "$WG" set $IF_A private-key <(echo "$ka") listen-port 51820 \
        peer "$(echo "$kb" | "$WG" pubkey)" allowed-ips 198.51.100.2/32 endpoint 192.0.2.2:51820
    ip netns exec $B "$WG" set $IF_B private-key <(echo "$kb") listen-port 51820 \
        peer "$(echo "$ka" | "$WG" pubkey)" allowed-ips 198.51.100.1/32 endpoint 192.0.2.1:51820
    ip -n $A addr add 198.51.100.1/24 dev $IF_A
    ip -n $B addr add 198.51.100.2/24 dev $IF_B
    ip -n $A link set $IF_A mtu 1420 up
    ip -n $B link set $IF_B mtu 1420 up
    ip netns exec $A ping -c 3 -i 0.2 -W 3 198.51.100.2 >/dev/null
}

json_num() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

rtt() { # namespace target count -> average RTT in ms
    ip netns exec "$1" ping -q -c "$3" -i 0.05 "$2" | awk -F/ '/^rtt/ {print $5}'
}

results=()
measure() {
    local impl=$1 target=198.51.100.2
    topology
    if [[ $impl == veth ]]; then
        target=192.0.2.2
    else
        tunnel "$impl"
    fi
    ip netns exec $B iperf3 -s -D -I /tmp/fwgbench-iperf.pid >/dev/null
    sleep 0.3
    local idle
    idle=$(rtt $A $target 40)

    local before after gbit cpu_s bytes
    before=$(cpu_ticks "${pids[@]}")
    ip netns exec $A ping -q -i 0.1 -c $((secs * 10)) $target >/tmp/fwgbench-loadping.txt &
    local pingpid=$!
    gbit_json=$(ip netns exec $A iperf3 -c $target -t "$secs" -J)
    wait $pingpid || true
    after=$(cpu_ticks "${pids[@]}")
    gbit=$(echo "$gbit_json" | json_num "d['end']['sum_received']['bits_per_second']/1e9")
    bytes=$(echo "$gbit_json" | json_num "d['end']['sum_received']['bytes']")
    cpu_s=$(python3 -c "print(($after-$before)/$(getconf CLK_TCK))")
    local loaded
    loaded=$(awk -F/ '/^rtt/ {print $5}' /tmp/fwgbench-loadping.txt)

    local gbit4
    gbit4=$(ip netns exec $A iperf3 -c $target -t "$secs" -P 4 -J |
        json_num "d['end']['sum_received']['bits_per_second']/1e9")

    local pps
    pps=$(ip netns exec $A iperf3 -c $target -u -b 0 -l 64 -t "$secs" -J |
        json_num "(d['end']['sum']['packets']-d['end']['sum']['lost_packets'])/d['end']['sum']['seconds']")

    local cpu_per_gb="—"
    if [[ $impl != veth ]]; then
        cpu_per_gb=$(python3 -c "print(f'{$cpu_s/($bytes/1e9):.2f}')")
    fi
    kill "$(cat /tmp/fwgbench-iperf.pid)" 2>/dev/null || true
    results+=("$impl|$gbit|$gbit4|$cpu_per_gb|$pps|$idle|$loaded")
    printf '%-22s TCP %6.2f Gbit/s  x4 %6.2f  CPU-s/GB %6s  64B UDP %8.0f pps  RTT idle %s ms, loaded %s ms\n' \
        "$impl" "$gbit" "$gbit4" "$cpu_per_gb" "$pps" "$idle" "$loaded" >&2
    cleanup
}

for ((round = 1; round <= rounds; round++)); do
    ((rounds > 1)) && echo "round $round of $rounds" >&2
    for impl in "${impls[@]}"; do
        measure "$impl"
    done
done

# The median of every figure per implementation, in the order the implementations ran.
if ((rounds > 1)); then
    mapfile -t results < <(printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = {}
for line in sys.stdin:
    f = line.strip().split("|")
    rows.setdefault(f[0], []).append(f[1:])
for impl, runs in rows.items():
    cols = []
    for i, values in enumerate(zip(*runs)):
        if values[0] == "—":
            cols.append("—")
            continue
        m = statistics.median(float(v) for v in values)
        cols.append(f"{m:.2f}" if i == 2 else (f"{m:.3f}" if i >= 4 else f"{m}"))
    print("|".join([impl] + cols))
')
fi

table() {
    local ref="" f
    for r in "${results[@]}"; do
        [[ ${r%%|*} == wireguard-go-newest ]] && ref=$r
    done
    echo "| system | TCP Gbit/s | 4 streams Gbit/s | CPU-s of both daemons per GB | UDP 64 B pps | RTT idle ms | RTT under load ms | TCP vs newest wireguard-go | CPU/GB vs newest wireguard-go | pps vs newest wireguard-go |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for r in "${results[@]}"; do
        IFS='|' read -r impl gbit gbit4 cpu pps idle loaded <<<"$r"
        local rt="" rc="" rp=""
        if [[ -n $ref && $impl != veth ]]; then
            IFS='|' read -r _ rgbit _ rcpu rpps _ _ <<<"$ref"
            rt=$(python3 -c "print(f'{$gbit/$rgbit:.2f}x')")
            rc=$(python3 -c "print(f'{$cpu/$rcpu:.2f}x')")
            rp=$(python3 -c "print(f'{$pps/$rpps:.2f}x')")
        fi
        printf '| %s | %.2f | %.2f | %s | %.0f | %s | %s | %s | %s | %s |\n' \
            "$impl" "$gbit" "$gbit4" "$cpu" "$pps" "$idle" "$loaded" "$rt" "$rc" "$rp"
    done
}

report=$(table)
echo "$report"
if [[ -n $out ]]; then
    {
        echo "## $(date -u +%Y-%m-%d) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
        echo
        if ((rounds > 1)); then
            echo "iperf3 ${secs} s per figure; both tunnel ends on this machine; median of ${rounds} rounds (implementations round-robin)."
        else
            echo "iperf3 ${secs} s per figure; both tunnel ends on this machine; one run."
        fi
        echo
        echo "$report"
        echo
    } >>"$out"
fi
