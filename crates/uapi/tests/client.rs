//! The client functions against small UNIX-socket servers in a temporary directory: one
//! built from this crate's server side, others replaying canned bytes like other daemons.

use ferrowg_uapi::client::{connect, get_at, list_interfaces_in, set_at};
use ferrowg_uapi::{
    read_request, write_errno, write_get_response, DeviceInfo, DeviceSet, PeerInfo, PeerSet,
    Recovery, Request, SecretKey,
};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ferrowg-uapi-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sample_info() -> DeviceInfo {
    let mut peer = PeerInfo::new([0xaa; 32]);
    peer.endpoint = Some("192.0.2.1:51820".parse().unwrap());
    peer.allowed_ips = vec![("10.0.0.0".parse().unwrap(), 24)];
    peer.rx_bytes = 5;
    DeviceInfo {
        private_key: Some(SecretKey::new([0x44; 32])),
        listen_port: 51820,
        fwmark: 0,
        peers: vec![peer],
    }
}

/// Serves `connections` connections with this crate's server side, the way ferrowgd will:
/// answers get with `info`, accepts sets with a listen port below 1000 only (so a refusal
/// can be provoked), and reports each valid set received.
fn spawn_server(
    path: &Path,
    connections: usize,
    info: DeviceInfo,
) -> (thread::JoinHandle<()>, mpsc::Receiver<DeviceSet>) {
    let listener = UnixListener::bind(path).unwrap();
    let (sent, received) = mpsc::channel();
    let handle = thread::spawn(move || {
        for _ in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(&stream);
            let mut writer = &stream;
            loop {
                match read_request(&mut reader) {
                    Ok(None) => break,
                    Ok(Some(Request::Get)) => write_get_response(&mut writer, &info).unwrap(),
                    Ok(Some(Request::Set(set))) => {
                        let status = match set.listen_port {
                            Some(port) if port >= 1000 => -98, // as if EADDRINUSE
                            _ => 0,
                        };
                        sent.send(set).unwrap();
                        write_errno(&mut writer, status).unwrap();
                    }
                    Err(e) => {
                        if e.recovery != Recovery::Close {
                            let _ = write_errno(&mut writer, e.wire_errno());
                        }
                        if e.recovery != Recovery::Continue {
                            break;
                        }
                    }
                }
            }
        }
    });
    (handle, received)
}

/// Serves one connection: reads the request up to its empty line, replies `reply`, and
/// keeps the connection open until the client closes it (as wireguard-go does), so a
/// client reading to end of stream would hang the test.
fn spawn_canned(path: &Path, reply: &'static [u8]) -> thread::JoinHandle<Vec<u8>> {
    let listener = UnixListener::bind(path).unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(&stream);
        let mut request = Vec::new();
        loop {
            let start = request.len();
            let n = reader.read_until(b'\n', &mut request).unwrap();
            if n == 0 || (start > 0 && &request[start..] == b"\n") {
                break;
            }
        }
        (&stream).write_all(reply).unwrap();
        // Wait for the client to hang up.
        let mut rest = Vec::new();
        let _ = reader.read_until(b'\0', &mut rest);
        request
    })
}

#[test]
fn get_and_set_against_our_own_server() {
    let dir = TempDir::new();
    let path = dir.join("wg0.sock");
    let (server, received) = spawn_server(&path, 3, sample_info());

    assert_eq!(get_at(&path).unwrap(), sample_info());

    let mut peer = PeerSet::new([0xbb; 32]);
    peer.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
    let set = DeviceSet {
        listen_port: Some(999),
        peers: vec![peer],
        ..DeviceSet::default()
    };
    set_at(&path, &set).unwrap();
    assert_eq!(received.recv().unwrap(), set);

    // A refusal (negative errno on the wire) becomes the positive errno wg reports.
    let refused = DeviceSet {
        listen_port: Some(51820),
        ..DeviceSet::default()
    };
    let e = set_at(&path, &refused).unwrap_err();
    assert_eq!(e.errno(), 98);
    assert!(e.detail().contains("errno=-98"), "{}", e.detail());
    server.join().unwrap();
}

#[test]
fn several_operations_on_one_connection() {
    let dir = TempDir::new();
    let path = dir.join("wg1.sock");
    let (server, received) = spawn_server(&path, 1, sample_info());
    let stream = UnixStream::connect(&path).unwrap();
    (&stream)
        .write_all(b"set=1\nlisten_port=5\n\nset=1\nlisten_port=x\n\nget=1\n\n")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    // The server closes after the end of our stream, so reading to the end is safe here.
    let mut all = String::new();
    (&stream).read_to_string(&mut all).unwrap();
    let expected_get = ferrowg_uapi::emit_get_response(&sample_info());
    assert_eq!(all, format!("errno=0\n\nerrno=-22\n\n{expected_get}"));
    assert_eq!(received.recv().unwrap().listen_port, Some(5));
    assert!(
        received.try_recv().is_err(),
        "the refused set must not be delivered"
    );
    server.join().unwrap();
}

#[test]
fn get_from_a_boringtun_style_daemon() {
    let dir = TempDir::new();
    let path = dir.join("bt0.sock");
    let server = spawn_canned(
        &path,
        b"own_public_key=5555555555555555555555555555555555555555555555555555555555555555\n\
          listen_port=40000\n\
          public_key=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\
          rx_bytes=3\ntx_bytes=4\nerrno=0\n\n",
    );
    let info = get_at(&path).unwrap();
    assert_eq!(info.listen_port, 40000);
    assert_eq!(info.peers.len(), 1);
    assert_eq!((info.peers[0].rx_bytes, info.peers[0].tx_bytes), (3, 4));
    assert_eq!(server.join().unwrap(), b"get=1\n\n");
}

#[test]
fn get_errors_carry_the_daemon_errno() {
    let dir = TempDir::new();
    let path = dir.join("e0.sock");
    let server = spawn_canned(&path, b"errno=5\n\n");
    assert_eq!(get_at(&path).unwrap_err().errno(), 5);
    server.join().unwrap();

    let path = dir.join("e1.sock");
    let server = spawn_canned(&path, b"errno=-22\n\n");
    assert_eq!(get_at(&path).unwrap_err().errno(), 71);
    server.join().unwrap();

    let path = dir.join("e2.sock");
    let server = spawn_canned(&path, b"listen_port=1\n\n");
    assert_eq!(get_at(&path).unwrap_err().errno(), 71);
    server.join().unwrap();
}

#[test]
fn set_sends_the_exact_text_and_reads_the_sign_like_wg() {
    let dir = TempDir::new();
    let set = DeviceSet {
        fwmark: Some(16),
        replace_peers: true,
        ..DeviceSet::default()
    };
    let path = dir.join("s0.sock");
    let server = spawn_canned(&path, b"errno=0\n\n");
    set_at(&path, &set).unwrap();
    assert_eq!(
        server.join().unwrap(),
        b"set=1\nfwmark=16\nreplace_peers=true\n\n"
    );

    // boringtun answers with a positive number; wg then reports "Unknown error -22".
    let path = dir.join("s1.sock");
    let server = spawn_canned(&path, b"errno=22\n\n");
    assert_eq!(set_at(&path, &set).unwrap_err().errno(), -22);
    server.join().unwrap();

    // No errno line at all: EPROTO.
    let path = dir.join("s2.sock");
    let server = spawn_canned(&path, b"\n");
    assert_eq!(set_at(&path, &set).unwrap_err().errno(), 71);
    server.join().unwrap();
}

#[test]
fn connection_failures_map_to_errno_and_stale_sockets_are_removed() {
    let dir = TempDir::new();
    // Missing: stat's ENOENT.
    assert_eq!(get_at(&dir.join("none.sock")).unwrap_err().errno(), 2);
    // Not a socket: EBADF.
    let file = dir.join("file.sock");
    fs::write(&file, b"").unwrap();
    assert_eq!(get_at(&file).unwrap_err().errno(), 9);
    assert!(file.exists());
    // Nobody listening: ECONNREFUSED, and the socket file is unlinked.
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let e = set_at(&stale, &DeviceSet::default()).unwrap_err();
    assert_eq!(e.errno(), 111);
    assert!(!stale.exists());
    assert!(connect(&stale).is_err());
}

#[test]
fn listing_finds_live_sockets_and_cleans_stale_ones() {
    let dir = TempDir::new();
    let _live_a = UnixListener::bind(dir.join("wg0.sock")).unwrap();
    let _live_b = UnixListener::bind(dir.join("ferrowg1.sock")).unwrap();
    drop(UnixListener::bind(dir.join("dead.sock")).unwrap());
    fs::write(dir.join("plain.sock"), b"").unwrap();
    let _no_suffix = UnixListener::bind(dir.join("wg2")).unwrap();
    let _no_name = UnixListener::bind(dir.join(".sock")).unwrap();

    let mut names = list_interfaces_in(&dir.0).unwrap();
    names.sort();
    assert_eq!(names, ["ferrowg1", "wg0"]);
    assert!(!dir.join("dead.sock").exists());
    assert!(dir.join("plain.sock").exists());

    assert!(list_interfaces_in(&dir.join("missing")).unwrap().is_empty());
}
