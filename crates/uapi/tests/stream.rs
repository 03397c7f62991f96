//! Server-side framing: several operations on one stream, and what a broken stream yields.

use ferrowg_uapi::{errno, read_request, Recovery, Request, MAX_LINE_LEN};
use std::io::{BufReader, Cursor};

fn reader(bytes: &[u8]) -> BufReader<Cursor<Vec<u8>>> {
    // A tiny buffer so lines straddle buffer refills.
    BufReader::with_capacity(7, Cursor::new(bytes.to_vec()))
}

#[test]
fn operations_are_read_one_after_another() {
    let mut r = reader(b"get=1\n\nset=1\nlisten_port=7\n\nset=1\n\nget=1\n\n");
    assert_eq!(read_request(&mut r).unwrap(), Some(Request::Get));
    match read_request(&mut r).unwrap() {
        Some(Request::Set(set)) => assert_eq!(set.listen_port, Some(7)),
        other => panic!("{other:?}"),
    }
    match read_request(&mut r).unwrap() {
        Some(Request::Set(set)) => assert_eq!(set, Default::default()),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_request(&mut r).unwrap(), Some(Request::Get));
    assert_eq!(read_request(&mut r).unwrap(), None);
    assert_eq!(read_request(&mut r).unwrap(), None);
}

#[test]
fn empty_stream_is_a_clean_end() {
    assert_eq!(read_request(&mut reader(b"")).unwrap(), None);
}

#[test]
fn a_refused_set_is_read_to_its_end_and_the_stream_goes_on() {
    let mut r = reader(b"set=1\nlisten_port=x\nno equals sign\nfwmark=1\n\nget=1\n\n");
    let e = read_request(&mut r).unwrap_err();
    assert_eq!((e.errno, e.recovery), (errno::EINVAL, Recovery::Continue));
    assert_eq!(e.wire_errno(), -22);
    assert_eq!(read_request(&mut r).unwrap(), Some(Request::Get));
    assert_eq!(read_request(&mut r).unwrap(), None);
}

#[test]
fn unknown_operations_close_the_connection() {
    for op in [
        &b"get=2\n\n"[..],
        b"set=true\n\n",
        b"GET=1\n\n",
        b"get=1 \n\n",
        b"hello\n",
        b"\n",
        b"get=1\r\n\r\n",
    ] {
        let e = read_request(&mut reader(op)).unwrap_err();
        assert_eq!(e.errno, errno::EPROTO, "{op:?}");
        assert_eq!(e.recovery, Recovery::Close, "{op:?}");
    }
    let e = read_request(&mut reader(b"get=2\n\n")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("get"));
    assert!(e.message.contains("get=2"), "{e}");
}

#[test]
fn get_must_be_followed_by_an_empty_line() {
    for input in [&b"get=1\nx\n"[..], b"get=1\nlisten_port=1\n\n", b"get=1\nx"] {
        let e = read_request(&mut reader(input)).unwrap_err();
        assert_eq!(e.errno, errno::EINVAL, "{input:?}");
        assert_eq!(e.recovery, Recovery::ReplyAndClose, "{input:?}");
    }
    let e = read_request(&mut reader(b"get=1\n")).unwrap_err();
    assert_eq!(e.recovery, Recovery::Close);
}

#[test]
fn truncated_input_is_refused() {
    // End of stream inside the operation line.
    let e = read_request(&mut reader(b"set=")).unwrap_err();
    assert_eq!((e.errno, e.recovery), (errno::EPROTO, Recovery::Close));
    // A set that never reaches its empty line is not returned, so never applied.
    for input in [
        &b"set=1\n"[..],
        b"set=1\nlisten_port=1\n",
        b"set=1\nlisten_port=1",
    ] {
        let e = read_request(&mut reader(input)).unwrap_err();
        assert_eq!(e.errno, errno::EPROTO, "{input:?}");
        assert_eq!(e.recovery, Recovery::ReplyAndClose, "{input:?}");
    }
    // ... and when a line was bad already, that line is what is reported.
    let e = read_request(&mut reader(b"set=1\nfwmark=x\n")).unwrap_err();
    assert_eq!(
        (e.errno, e.recovery),
        (errno::EINVAL, Recovery::ReplyAndClose)
    );
}

#[test]
fn overlong_lines_are_cut_off() {
    let mut input = b"set=1\nlisten_port=".to_vec();
    input.extend(std::iter::repeat_n(b'1', MAX_LINE_LEN));
    input.extend_from_slice(b"\n\n");
    let e = read_request(&mut reader(&input)).unwrap_err();
    assert_eq!(
        (e.errno, e.recovery),
        (errno::EPROTO, Recovery::ReplyAndClose)
    );

    let op = vec![b'g'; MAX_LINE_LEN * 4];
    let e = read_request(&mut reader(&op)).unwrap_err();
    assert_eq!(e.recovery, Recovery::Close);

    // A line of exactly the maximal length is still a line (here an invalid value).
    let mut input = b"set=1\n".to_vec();
    let key = b"fwmark=";
    input.extend_from_slice(key);
    input.extend(std::iter::repeat_n(b'0', MAX_LINE_LEN - key.len()));
    input.extend_from_slice(b"\n\n");
    match read_request(&mut reader(&input)).unwrap() {
        Some(Request::Set(set)) => assert_eq!(set.fwmark, Some(0)),
        other => panic!("{other:?}"),
    }
}
