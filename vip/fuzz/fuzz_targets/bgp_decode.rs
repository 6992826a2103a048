//! Arbitrary bytes -> the framer and decoder the session uses on a
//! peer's byte stream. Nothing may panic; every error must map to a
//! NOTIFICATION; whatever decodes must re-encode to a message that
//! decodes again to the same bytes.
//!
//! The first byte steers: bit 0 selects 4-octet AS numbers, bit 1 wraps
//! the rest in a valid header whose type is the second byte (so random
//! bodies reach the OPEN/UPDATE/... decoders past the marker and length).

#![no_main]

use furrow_vip::bgp::codec::{decode, frame_len, CodecOptions, MAX_MESSAGE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&steer, rest)) = data.split_first() else {
        return;
    };
    let opts = CodecOptions {
        four_octet_as: steer & 1 != 0,
    };
    let mut stream = Vec::new();
    if steer & 2 != 0 {
        let Some((&ty, body)) = rest.split_first() else {
            return;
        };
        let body = &body[..body.len().min(MAX_MESSAGE_LEN - 19)];
        stream.extend_from_slice(&[0xff; 16]);
        stream.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        stream.push(ty);
        stream.extend_from_slice(body);
    } else {
        stream.extend_from_slice(rest);
    }
    // Frame the stream as the session does.
    let mut buf = &stream[..];
    loop {
        match frame_len(buf) {
            Ok(None) => break,
            Err(e) => {
                let _ = e.notification();
                break;
            }
            Ok(Some(len)) => {
                assert!((19..=MAX_MESSAGE_LEN).contains(&len) && len <= buf.len());
                let (msg, tail) = buf.split_at(len);
                buf = tail;
                match decode(msg, opts) {
                    Err(e) => {
                        let n = e.notification();
                        assert!((1..=7).contains(&n.code));
                        let _ = e.resets_session();
                    }
                    Ok(m) => {
                        let Ok(w1) = m.encode(opts) else {
                            continue;
                        };
                        let m2 = decode(&w1, opts).expect("a re-encoded message decodes");
                        let w2 = m2.encode(opts).expect("and encodes again");
                        assert_eq!(w1, w2);
                    }
                }
            }
        }
    }
});
