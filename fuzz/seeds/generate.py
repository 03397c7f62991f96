#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (fuzz/seeds/<target>/).

Run from anywhere: `python3 fuzz/seeds/generate.py`. The files are committed; this script only
documents where every byte came from and regenerates them identically.

* messages: the deterministic handshake vectors (PROTOCOL.md §10.1, the same bytes as
  crates/proto/tests/vectors.rs): initiation, both responses, the cookie reply, both data
  messages and both keepalives, plus inner IPv4/IPv6 packets.
* uapi_request: the exact `set` text `wg` sends (§7.6, keys filled in), `get=1`, a get reply in
  wireguard-go's order (§7.5), and several operations on one connection. The first byte of
  every input is the target's chunking mode (0: whole reads).
* config_file: `wg showconf` output (§8.3) and a wg-quick file (§9.2). The first byte chooses
  the dialect (0: wg, 1: wg-quick).
* engine_receive: small programs in the target's own format (see the target's docs): a live
  session exercised with real traffic, replays, mutations of real messages, timers, load and
  PSK changes.
* aead_batch: a key, the byte that picks which message to change, then per message a LE16
  length, a LE64 counter and a mode byte (bit 0: sealed from a separate plaintext; bits 1-6:
  padding) followed by its plaintext: eight 1420-byte packets (the data plane's usual run),
  and small messages (keepalives, ACKs) with counters near the top.
* gro: a mode byte, then LE16-length-prefixed IP packets with correct checksums: a TCP stream
  over IPv4 and over IPv6 (full segments, a short one, PSH on the last), UDP bursts, two
  flows interleaved with a pure ACK and a corrupted segment among them.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))


def h(s):
    return bytes.fromhex("".join(s.split()))


INITIATION = h("""
01000000443322117b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13ec3f8bbe944e0c99
daaae8f27b8b12f1c67e00c86b77d0eeb515d0b423a739cda3c6afd3e0110c93bb54eb8484ada1232962bac03df010b8
03013f7bcc2ea6fbe47e2f0de44f69d716bf91ea7e9eb0f0886f35f472cff21dfc79fdb1000000000000000000000000
00000000""")
RESPONSE_A = h("""
0200000088776655443322110faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20d071f3e3
d8fa05f53ebd7085098abcf519a3dd6906a0246edc6593f0bfe2fabc00000000000000000000000000000000""")
RESPONSE_B = h("""
0200000088776655443322110faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f209e46a356
c83312dc8767cee2d0bad22e11782cb95417e42dc25c2088fcd9d60100000000000000000000000000000000""")
DATA_A = h("""
04000000887766550000000000000000446e19c741243569ad2c65e620cedd587bd00aac1b82fd672cff7f5abf78c62c
6fbfe9c68c103261170943fadaa44102""")
DATA_B = h("""
040000008877665500000000000000003bb732039dcffc49a8232e65a4b0d1d8ea453e8a2f3855079420faf9f8c03298
1f72b8a5a050cd3ed740157b933e40b9""")
KEEPALIVE_A = h("04000000443322110000000000000000e707bcf1aa6c9b295f32d4dd8cf684e0")
KEEPALIVE_B = h("040000004433221100000000000000002c139c814ac7f2256a219bcd4fea41dc")
COOKIE_REPLY = h("""
0300000044332211000102030405060708090a0b0c0d0e0f101112131415161751e653fb82585bbd77e7eef4c4dcbf43
114848128fd854f9a8269a117b5464fd""")
INNER_V4 = h("4500001c000100004001f7cc0a0000010a0000020800f7ff00000000")
# fd00::1 -> fd00::2, next header 59 (none), 4 payload bytes.
INNER_V6 = h("6000000000043b40" + "fd00" + "00" * 13 + "01" + "fd00" + "00" * 13 + "02" + "deadbeef")

# Keys of §10.1 in hex (public keys of S_i and S_r, the PSK of vector A).
K_I = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
K_R = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
PSK = bytes(range(0x40, 0x60)).hex()

WG_SET = f"""set=1
private_key=0000000000000000000000000000000000000000000000000000000000000000
listen_port=51821
fwmark=16
public_key={K_I}
preshared_key={PSK}
endpoint=[2001:db8::5]:51820
persistent_keepalive_interval=0
allowed_ip=10.0.0.0/24
allowed_ip=10.1.0.0/16
allowed_ip=-10.2.0.0/16
public_key={K_R}
remove=true

"""

SETCONF = f"""set=1
private_key=70076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c6a
listen_port=51820
fwmark=51820
replace_peers=true
public_key={K_R}
protocol_version=1
preshared_key={PSK}
endpoint=192.0.2.1:51820
persistent_keepalive_interval=25
replace_allowed_ips=true
allowed_ip=10.0.0.2/32
allowed_ip=fd00::2/128
public_key={K_I}
update_only=true
endpoint=[fe80::1%2]:51821

"""

GET_REPLY = f"""private_key=70076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c6a
listen_port=51820
fwmark=51820
public_key={K_R}
preshared_key={PSK}
protocol_version=1
endpoint=192.0.2.1:51820
last_handshake_time_sec=1700000000
last_handshake_time_nsec=117440512
tx_bytes=1428
rx_bytes=1372
persistent_keepalive_interval=25
allowed_ip=10.0.0.2/32
allowed_ip=fd00::2/128
public_key={K_I}
preshared_key={"0" * 64}
endpoint=[2001:db8::1]:51821
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
errno=0

"""

SHOWCONF = """[Interface]
ListenPort = 51820
FwMark = 0xca6c
PrivateKey = cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=

[Peer]
PublicKey = 3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=
PresharedKey = QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=
AllowedIPs = 10.0.0.2/32, fd00::2/128
Endpoint = 192.0.2.1:51820
PersistentKeepalive = 25

[Peer]
PublicKey = ew1H2TQn+DERYHgcfHM/2J+IlwrvSQ2KoO4ZpMuKGxQ=
Endpoint = [2001:db8::1]:51821
"""

ADDCONF = """# addconf-style: incremental allowed IPs, odd spacing and case
[interface]
private key = WKsIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Gs=
listenport = domain
fwmark = off
[PEER]
PublicKey=hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=
AllowedIPs = +10.1.0.0/16, -10.2.0.0/16,10.9.9.9/24
AllowedIPs = ::/0
Endpoint = 127.0.0.1:99999
PersistentKeepalive = off
"""

QUICK = """[Interface]
Address = 10.0.0.1/24, fd00::1/64
DNS = 192.0.2.53, 2001:db8::53, example.internal
MTU = 1420
Table = off
PreUp = echo pre-up # kept: hooks keep their comments
PostUp = iptables -A FORWARD -i %i -j ACCEPT
PreDown = true
PostDown = iptables -D FORWARD -i %i -j ACCEPT
SaveConfig = false
ListenPort = 51820
PrivateKey = cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=

[Peer]
PublicKey = 3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [2001:db8::1]:51820
"""


# ----- engine_receive programs -----------------------------------------------------------
# Setup byte: bit 0 no session, bit 1 PSK, bit 2 B does not know A's endpoint, bits 3-4 MTU
# (1420, 0, 1280, 576), bit 5 B under load.
# Operation byte: value % 10 selects the operation; A's side uses 0..9, B's 130..139.
def op(k, side="A"):
    return bytes([k if side == "A" else 130 + k])


def u16(v):
    return v.to_bytes(2, "little")


def src(s):
    """The source choice: 0/1 the peer's address, 2 its IP with port 40000, 3 a stranger."""
    return bytes([s]) + (u16(40000) if s >= 2 else b"")


def garbage_raw(side, data, s=0):
    return op(0, side) + src(s) + bytes([0]) + u16(len(data)) + data


LENGTHS = {1: 148, 2: 92, 3: 64}


def garbage_typed(side, t, fill, s=0, extra_len=0):
    """Type t's header word and length (transport: 32 + extra_len), contents `fill`."""
    length = LENGTHS.get(t, 32 + extra_len)
    body = bytes([fill]) * length
    return op(0, side) + src(s) + bytes([1, t - 1]) + (u16(extra_len) if t == 4 else b"") + body


def garbage_size(side, which, fill=0, t=4, s=0):
    """One of the lengths 0, 1, 3, 4, 65535, 65536, 70000 (a type header from 4 bytes on)."""
    tail = bytes([t - 1]) if which >= 3 else b""
    return op(0, side) + src(s) + bytes([2, which, fill]) + tail


def mutate(index, kind, arg=b"", s=0):
    return op(2) + u16(index) + src(s) + bytes([kind]) + arg


def replay(index, s=0):
    return op(4) + u16(index) + src(s)


def send(side, payload_len, tag=0):
    return op(5, side) + bytes([0]) + u16(payload_len) + u16(tag)


def send_spoofed(side, payload_len):
    return op(5, side) + bytes([2, payload_len])


def send_raw(side, packet):
    return op(5, side) + bytes([3]) + u16(len(packet)) + packet


UNITS = {"ms": 0, "20ms": 1, "s": 2, "5s": 3, "10s": 4, "min": 5}


def advance(count, unit):
    return op(7) + bytes([UNITS[unit] | (count - 1) << 3])


def control(b, side="A", arg=b""):
    return op(8, side) + bytes([b]) + arg


ENGINE = {
    # A live session: data both ways, replays of real messages (one from another port), the
    # vectors' data message and cookie reply as garbage, a keepalive period, a large packet.
    "session_traffic": bytes([0])
    + send("A", 40, 1)
    + send("B", 40, 2)
    + replay(2)
    + replay(3, s=2)
    + garbage_raw("B", DATA_A)
    + garbage_raw("A", COOKIE_REPLY, s=3)
    + advance(2, "10s")
    + send("A", 1400, 3),
    # No session: the handshake starts from a send; then mutations of the initiation and
    # the response (bit flip, overwrite, truncate, extend, splice of mac2), replays.
    "handshake_mutations": bytes([1])
    + send("A", 40, 1)
    + mutate(0, 0, u16(900))
    + mutate(1, 1, u16(70) + b"\x55")
    + mutate(2, 2, u16(31))
    + mutate(2, 3, b"\x04abcd")
    + mutate(0, 4, u16(132) + b"\x10" + bytes(16))
    + replay(0)
    + replay(1, s=2),
    # B under load: a cookie reply, then the retransmission with mac2 5 s later.
    "under_load": bytes([1 | 0x20])
    + send("A", 40, 1)
    + control(3, "B")
    + advance(5, "s")
    + control(3, "B")
    + advance(1, "5s")
    + send("A", 10, 2)
    + garbage_typed("B", 1, 0x00, s=3),
    # Oversized and empty datagrams to both sides, typed garbage of every kind, an IPv6
    # packet nobody routes and a raw IPv4 one.
    "sizes": bytes([0])
    + garbage_size("A", 0)
    + garbage_size("B", 4, 0xFF, 4)
    + garbage_size("A", 5, 1, 1)
    + garbage_size("B", 6, 2, 2)
    + garbage_typed("A", 2, 0x22)
    + garbage_typed("B", 3, 0x33)
    + garbage_typed("A", 4, 0x44, extra_len=16)
    + send_raw("A", INNER_V6)
    + send_raw("B", INNER_V4),
    # A spoofed inner source, MTU 0 then 48, a PSK change on both sides and a rekey's worth
    # of time.
    "psk_rekey": bytes([2 | (1 << 3)])
    + send_spoofed("A", 100)
    + control(4, "A", u16(48))
    + send("A", 100, 2)
    + op(9)
    + u16(7)
    + bytes([0])
    + advance(16, "min")
    + send("A", 10, 3)
    + advance(6, "s")
    + send("B", 10, 4),
    # Links cut and restored: retransmissions, a one-way cut, giving up.
    "cuts": bytes([1])
    + control(0)
    + send("A", 40, 1)
    + advance(4, "5s")
    + control(0)
    + advance(1, "5s")
    + control(1)
    + send("A", 40, 2)
    + advance(3, "10s")
    + control(1)
    + control(2)
    + send("B", 40, 3)
    + advance(32, "10s"),
}


def aead_message(length, counter, mode, body):
    return length.to_bytes(2, "little") + counter.to_bytes(8, "little") + bytes([mode]) + body


AEAD_BATCH = {
    "eight-mtu-packets": bytes(range(32))
    + b"\x07"
    + b"".join(aead_message(1420, 1000 + i, (i & 1) | (4 << 1), bytes([i]) * 1420) for i in range(8)),
    "small-mixed": bytes(range(32))[::-1]
    + b"\x01"
    + b"".join(
        aead_message(n, 2**64 - 2 - i, i * 3, bytes(n)) for i, n in enumerate([0, 40, 52, 64, 65, 127])
    ),
}


def csum_sum(data, initial=0):
    if len(data) % 2:
        data += b"\x00"
    total = initial + sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ip_packet(v6, proto, l4_without_csum, csum_at, src_last=1):
    """An IPv4/IPv6 packet around a TCP/UDP header+payload, both checksums filled in."""
    l4 = bytearray(l4_without_csum)
    if v6:
        src = bytes.fromhex("20010db8000000000000000000000000")[:15] + bytes([src_last])
        dst = bytes.fromhex("20010db8000000000000000000000002")
        pseudo = csum_sum(src + dst, proto + len(l4))
    else:
        src, dst = bytes([192, 0, 2, src_last]), bytes([192, 0, 2, 2])
        pseudo = csum_sum(src + dst, proto + len(l4))
    c = (~csum_sum(bytes(l4), pseudo)) & 0xFFFF
    l4[csum_at:csum_at + 2] = c.to_bytes(2, "big")
    if v6:
        return bytes([0x60, 0, 0, 0]) + len(l4).to_bytes(2, "big") + bytes([proto, 64]) + src + dst + bytes(l4)
    hdr = bytearray(bytes([0x45, 0]) + (20 + len(l4)).to_bytes(2, "big") + b"\x00\x07\x40\x00" + bytes([64, proto]) + b"\x00\x00" + src + dst)
    hdr[10:12] = ((~csum_sum(bytes(hdr))) & 0xFFFF).to_bytes(2, "big")
    return bytes(hdr) + bytes(l4)


def tcp(v6, seq, payload, flags=0x10, sport=40000):
    l4 = sport.to_bytes(2, "big") + (5201).to_bytes(2, "big") + seq.to_bytes(4, "big") + (77).to_bytes(4, "big")
    l4 += bytes([0x50, flags]) + (512).to_bytes(2, "big") + b"\x00\x00\x00\x00" + payload
    return ip_packet(v6, 6, l4, 16)


def udp(v6, payload, sport=40000):
    l4 = sport.to_bytes(2, "big") + (5201).to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\x00\x00" + payload
    return ip_packet(v6, 17, l4, 6)


def gro_input(mode, packets):
    return bytes([mode]) + b"".join(len(p).to_bytes(2, "little") + p for p in packets)


def gro_seeds():
    stream = lambda v6: [tcp(v6, 1000 + i * 1380, bytes([i]) * 1380) for i in range(6)] + [
        tcp(v6, 1000 + 6 * 1380, b"z" * 500, flags=0x18)
    ]
    bad = bytearray(tcp(False, 1000 + 2 * 1380, b"x" * 1380))
    bad[-1] ^= 1
    mixed = [
        tcp(False, 1000, b"a" * 1380),
        tcp(False, 5000, b"b" * 1380, sport=40001),
        tcp(False, 2380, b"c" * 1380),
        tcp(False, 2380, b"", sport=40001),
        bytes(bad),
        tcp(False, 6380, b"d" * 1380, sport=40001),
    ]
    return {
        "tcp4_stream": gro_input(0x0F, stream(False)),
        "tcp6_stream": gro_input(0x0F, stream(True)),
        "udp_burst": gro_input(0x1F, [udp(False, bytes([i]) * 64) for i in range(70)]),
        "udp6_burst_small_queue": gro_input(0x12, [udp(True, bytes([i]) * 200) for i in range(10)]),
        "mixed_flows": gro_input(0x03, mixed),
        "no_offload": gro_input(0x2F, stream(False)),
    }


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for name, data in [
        ("initiation", INITIATION),
        ("response_psk", RESPONSE_A),
        ("response_nopsk", RESPONSE_B),
        ("cookie_reply", COOKIE_REPLY),
        ("data_psk", DATA_A),
        ("data_nopsk", DATA_B),
        ("keepalive_psk", KEEPALIVE_A),
        ("keepalive_nopsk", KEEPALIVE_B),
        ("inner_v4", INNER_V4),
        ("inner_v6", INNER_V6),
    ]:
        write("messages", name, data)

    for name, text in [
        ("wg_set", WG_SET),
        ("setconf", SETCONF),
        ("get", "get=1\n\n"),
        ("get_reply", GET_REPLY),
        ("stream", "get=1\n\n" + WG_SET + "get=1\n\n" + SETCONF),
        ("bad_then_good", "set=1\nlisten_port=65536\n\n" + WG_SET),
    ]:
        write("uapi_request", name, b"\x00" + text.encode())
    write("uapi_request", "wg_set_bytewise", b"\x01" + WG_SET.encode())

    write("config_file", "showconf", b"\x00" + SHOWCONF.encode())
    write("config_file", "addconf", b"\x00" + ADDCONF.encode())
    write("config_file", "wg_quick", b"\x01" + QUICK.encode())
    write("config_file", "wg_quick_as_wg", b"\x00" + QUICK.encode())

    for name, data in ENGINE.items():
        write("engine_receive", name, data)

    for name, data in AEAD_BATCH.items():
        write("aead_batch", name, data)

    for name, data in gro_seeds().items():
        write("gro", name, data)


if __name__ == "__main__":
    main()
