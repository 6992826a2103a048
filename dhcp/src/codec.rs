//! The DHCP message itself (the UDP payload): decoding with every length
//! checked before dhcproto sees it, and encoding with a fixed option order.
//!
//! dhcproto decodes options leniently: it stops at the first option it
//! cannot read and silently drops the rest, and a few of its decoders
//! `debug_assert!` on lengths or subtract from them unchecked. So the
//! option area is walked here first (TLV bounds, RFC 3396 concatenation,
//! RFC 2131 option overload) and each option is then handed to dhcproto
//! alone, with the lengths that would trip it rejected up front.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, DhcpOptions, HType, Message, MessageType, OptionCode, MAGIC};
use dhcproto::{Decodable, Decoder, Encodable};
use thiserror::Error;

/// op .. file: the fixed BOOTP part.
pub const FIXED_LEN: usize = 236;
/// The fixed part plus the magic cookie: the smallest DHCP message.
pub const MIN_MESSAGE_LEN: usize = FIXED_LEN + 4;
/// BOOTP relays and old clients drop shorter messages (RFC 1542 2.1).
pub const MIN_ENCODED_LEN: usize = 300;

const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

/// Why a DHCP payload was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    #[error("DHCP message of {len} bytes is shorter than the {MIN_MESSAGE_LEN}-byte minimum")]
    TooShort { len: usize },
    #[error("op code {op} is neither BOOTREQUEST (1) nor BOOTREPLY (2)")]
    BadOp { op: u8 },
    #[error("hardware type {htype} / length {hlen}: only Ethernet (1/6) is served")]
    BadHardware { htype: u8, hlen: u8 },
    #[error("magic cookie {0:02x?} is not 63:82:53:63")]
    BadMagic([u8; 4]),
    #[error("option {code} at offset {at}: its header runs past the end of the {area}")]
    OptionTruncated {
        code: u8,
        at: usize,
        area: &'static str,
    },
    #[error("option {code} at offset {at}: length {len} runs past the end of the {area}")]
    OptionOverrun {
        code: u8,
        len: usize,
        at: usize,
        area: &'static str,
    },
    #[error("option {code} is malformed: {reason}")]
    BadOption { code: u8, reason: String },
    #[error("header: {0}")]
    Header(String),
}

/// Why a message could not be encoded.
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("encoding DHCP message: {0}")]
    Dhcproto(#[from] dhcproto::error::EncodeError),
    #[error("encoded header is {0} bytes, expected {MIN_MESSAGE_LEN}")]
    HeaderLength(usize),
}

/// A decoded message plus what was dropped on the way (for logs).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub message: Message,
    /// Options that were malformed but not needed to answer; dropped
    /// rather than refusing the whole message (a bad hostname should not
    /// cost a VM its address).
    pub ignored_options: Vec<u8>,
}

/// Options whose malformation makes the message unanswerable, so they
/// fail the decode instead of being dropped.
fn critical(code: u8) -> bool {
    matches!(code, 50 | 51 | 52 | 53 | 54 | 55 | 57 | 61 | 82)
}

/// Exact or minimum lengths dhcproto would otherwise assert on, underflow
/// on, or read silently short.
fn length_ok(code: u8, len: usize) -> Result<(), String> {
    let exact = |n: usize| {
        if len == n {
            Ok(())
        } else {
            Err(format!("length {len}, expected {n}"))
        }
    };
    match code {
        53 | 52 => exact(1),
        57 => exact(2),
        50 | 51 | 54 | 58 | 59 => exact(4),
        80 => exact(0),
        94 => exact(3),
        152..=155 => exact(4),
        81 if len < 3 => Err(format!("length {len}, expected at least 3")),
        151 if len < 1 => Err("empty".into()),
        61 if len < 2 => Err(format!("length {len}, expected at least 2 (RFC 2132 9.14)")),
        _ => Ok(()),
    }
}

/// Walks one option area, appending each option's data to `out`
/// (RFC 3396: repeated codes concatenate, in order of appearance).
fn walk(
    area: &[u8],
    name: &'static str,
    base: usize,
    out: &mut Vec<(u8, Vec<u8>)>,
) -> Result<(), MessageError> {
    let mut i = 0;
    while i < area.len() {
        let code = area[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => return Ok(()),
            _ => {}
        }
        let Some(&len) = area.get(i + 1) else {
            return Err(MessageError::OptionTruncated {
                code,
                at: base + i,
                area: name,
            });
        };
        let len = len as usize;
        let Some(data) = area.get(i + 2..i + 2 + len) else {
            return Err(MessageError::OptionOverrun {
                code,
                len,
                at: base + i,
                area: name,
            });
        };
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some((_, v)) => v.extend_from_slice(data),
            None => out.push((code, data.to_vec())),
        }
        i += 2 + len;
    }
    // No End option: tolerated, many embedded clients omit it when the
    // options fill the packet exactly.
    Ok(())
}

/// Decodes one DHCP message (the UDP payload).
pub fn decode(buf: &[u8]) -> Result<Decoded, MessageError> {
    if buf.len() < MIN_MESSAGE_LEN {
        return Err(MessageError::TooShort { len: buf.len() });
    }
    let op = buf[0];
    if op != 1 && op != 2 {
        return Err(MessageError::BadOp { op });
    }
    let (htype, hlen) = (buf[1], buf[2]);
    if htype != 1 || hlen != 6 {
        return Err(MessageError::BadHardware { htype, hlen });
    }
    let magic: [u8; 4] = [buf[236], buf[237], buf[238], buf[239]];
    if magic != MAGIC {
        return Err(MessageError::BadMagic(magic));
    }
    // The fixed header through dhcproto, with an empty option list.
    let mut head = [0u8; MIN_MESSAGE_LEN + 1];
    head[..MIN_MESSAGE_LEN].copy_from_slice(&buf[..MIN_MESSAGE_LEN]);
    head[MIN_MESSAGE_LEN] = 255;
    let mut message = Message::decode(&mut Decoder::new(&head))
        .map_err(|e| MessageError::Header(e.to_string()))?;

    let mut raw = Vec::new();
    walk(
        &buf[MIN_MESSAGE_LEN..],
        "options",
        MIN_MESSAGE_LEN,
        &mut raw,
    )?;
    // RFC 2131 4.1: option 52 moves more options into file and/or sname,
    // read in that order after the options field.
    let overload = raw
        .iter()
        .find(|(c, _)| *c == 52)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    if let [v] = overload[..] {
        if v == 1 || v == 3 {
            walk(&buf[FILE], "file field", FILE.start, &mut raw)?;
            message.clear_fname();
        }
        if v == 2 || v == 3 {
            walk(&buf[SNAME], "sname field", SNAME.start, &mut raw)?;
            message.clear_sname();
        }
    }

    let mut opts = DhcpOptions::new();
    let mut ignored = Vec::new();
    for (code, data) in raw {
        match decode_option(code, &data) {
            Ok(opt) => {
                opts.insert(opt);
            }
            Err(reason) if critical(code) => return Err(MessageError::BadOption { code, reason }),
            Err(reason) => {
                tracing::debug!(code, %reason, "ignoring a malformed DHCP option");
                ignored.push(code);
            }
        }
    }
    message.set_opts(opts);
    Ok(Decoded {
        message,
        ignored_options: ignored,
    })
}

fn decode_option(code: u8, data: &[u8]) -> Result<DhcpOption, String> {
    length_ok(code, data.len())?;
    // Re-split into <= 255-byte pieces: dhcproto joins consecutive pieces of
    // one code (RFC 3396) but reads each piece's own length byte.
    let mut tlv = Vec::with_capacity(data.len() + 2 * (data.len() / 255 + 1));
    let mut pieces = data.chunks(255).peekable();
    if pieces.peek().is_none() {
        tlv.extend([code, 0]);
    }
    for piece in pieces {
        tlv.extend([code, piece.len() as u8]);
        tlv.extend_from_slice(piece);
    }
    let opt = DhcpOption::decode(&mut Decoder::new(&tlv)).map_err(|e| e.to_string())?;
    if let DhcpOption::RelayAgentInformation(info) = &opt {
        // dhcproto stops at the first bad sub-option and drops the rest;
        // echoing such a remnant (or nothing: an empty option vanishes on
        // encode) would hand the relay something it never sent.
        let back = info.to_vec().map_err(|e| e.to_string())?;
        if data.is_empty() || back.len() != data.len() {
            return Err(format!(
                "{} of {} bytes are well-formed sub-options",
                back.len(),
                data.len()
            ));
        }
    }
    Ok(opt)
}

/// Encodes `msg`: fixed header, magic, options (53 first, 54 next, then by
/// code, relay agent information last as RFC 3046 2.2 requires), End, and
/// zero padding up to `min_len`.
pub fn encode(msg: &Message, min_len: usize) -> Result<Vec<u8>, EncodeError> {
    let mut head = msg.clone();
    head.set_opts(DhcpOptions::new());
    let mut out = head.to_vec()?;
    if out.len() != MIN_MESSAGE_LEN {
        return Err(EncodeError::HeaderLength(out.len()));
    }
    for opt in ordered(msg.opts()) {
        out.extend(opt.to_vec()?);
    }
    out.push(255);
    if out.len() < min_len {
        out.resize(min_len, 0);
    }
    Ok(out)
}

/// Options in wire order.
pub fn ordered(opts: &DhcpOptions) -> Vec<&DhcpOption> {
    let rank = |c: u8| match c {
        53 => (0, c),
        54 => (1, c),
        82 => (3, c),
        _ => (2, c),
    };
    let mut v: Vec<&DhcpOption> = opts.iter().map(|(_, o)| o).collect();
    v.sort_by_key(|o| rank(u8::from(OptionCode::from(*o))));
    v
}

/// Encoded size of one option, including any RFC 3396 split headers.
pub fn option_len(opt: &DhcpOption) -> usize {
    opt.to_vec().map(|v| v.len()).unwrap_or(usize::MAX / 4)
}

/// Bytes the encoded message takes before padding.
pub fn encoded_len(msg: &Message) -> usize {
    MIN_MESSAGE_LEN + msg.opts().iter().map(|(_, o)| option_len(o)).sum::<usize>() + 1
}

// Small accessors: dhcproto's typed options, without the match noise.

pub fn msg_type(m: &Message) -> Option<MessageType> {
    match m.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(t)) => Some(*t),
        _ => None,
    }
}

pub fn requested_ip(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    }
}

pub fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

pub fn client_id(m: &Message) -> Option<&[u8]> {
    match m.opts().get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) => Some(id),
        _ => None,
    }
}

pub fn hostname(m: &Message) -> Option<&str> {
    match m.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => Some(h),
        _ => None,
    }
}

pub fn max_message_size(m: &Message) -> Option<u16> {
    match m.opts().get(OptionCode::MaxMessageSize) {
        Some(DhcpOption::MaxMessageSize(n)) => Some(*n),
        _ => None,
    }
}

pub fn parameter_list(m: &Message) -> Option<&[OptionCode]> {
    match m.opts().get(OptionCode::ParameterRequestList) {
        Some(DhcpOption::ParameterRequestList(l)) => Some(l),
        _ => None,
    }
}

/// The client's MAC, if the message is Ethernet (htype 1, hlen 6). Safe on
/// any `Message`: dhcproto's `chaddr()` panics when hlen > 16.
pub fn ethernet_chaddr(m: &Message) -> Option<[u8; 6]> {
    if m.htype() != HType::Eth || m.hlen() != 6 {
        return None;
    }
    let c = m.chaddr();
    Some([c[0], c[1], c[2], c[3], c[4], c[5]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<u8> {
        let mut b = vec![0u8; MIN_MESSAGE_LEN];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[28..34].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        b[236..240].copy_from_slice(&MAGIC);
        b
    }

    #[test]
    fn header_checks_are_typed() {
        assert_eq!(
            decode(&base()[..239]).unwrap_err(),
            MessageError::TooShort { len: 239 }
        );
        let mut b = base();
        b[0] = 3;
        assert_eq!(decode(&b).unwrap_err(), MessageError::BadOp { op: 3 });
        let mut b = base();
        b[2] = 17;
        assert_eq!(
            decode(&b).unwrap_err(),
            MessageError::BadHardware { htype: 1, hlen: 17 }
        );
        let mut b = base();
        b[239] = 0;
        assert!(matches!(decode(&b).unwrap_err(), MessageError::BadMagic(_)));
    }

    #[test]
    fn option_bounds_are_checked() {
        let mut b = base();
        b.extend([53, 1, 1, 12, 9, b'a']);
        assert!(matches!(
            decode(&b).unwrap_err(),
            MessageError::OptionOverrun {
                code: 12,
                len: 9,
                at: 243,
                ..
            }
        ));
        let mut b = base();
        b.extend([53, 1, 1, 12]);
        assert!(matches!(
            decode(&b).unwrap_err(),
            MessageError::OptionTruncated { code: 12, .. }
        ));
    }

    #[test]
    fn lengths_that_would_trip_dhcproto_are_refused_or_dropped() {
        // 53 of length 2: critical, refused.
        let mut b = base();
        b.extend([53, 2, 1, 1, 255]);
        assert!(matches!(
            decode(&b).unwrap_err(),
            MessageError::BadOption { code: 53, .. }
        ));
        // 94 (debug_assert len == 3 in dhcproto) and 151 with length 0
        // (underflow): dropped, the message survives.
        let mut b = base();
        b.extend([94, 1, 0, 151, 0, 81, 1, 0, 53, 1, 1, 255]);
        let d = decode(&b).unwrap();
        assert_eq!(msg_type(&d.message), Some(MessageType::Discover));
        assert_eq!(d.ignored_options, vec![94, 151, 81]);
    }

    #[test]
    fn relay_information_must_decode_whole() {
        // Empty, and a sub-option running past the option's end: refused,
        // since it must be echoed exactly (RFC 3046).
        for bad in [&[82u8, 0][..], &[82, 4, 1, 1, b'x', 2]] {
            let mut b = base();
            b.extend([53, 1, 1]);
            b.extend(bad);
            b.push(255);
            assert!(
                matches!(
                    decode(&b).unwrap_err(),
                    MessageError::BadOption { code: 82, .. }
                ),
                "{bad:?}"
            );
        }
        let mut b = base();
        b.extend([53, 1, 1, 82, 6, 1, 1, b'x', 2, 1, b'y', 255]);
        assert!(decode(&b).is_ok());
    }

    #[test]
    fn a_bad_option_does_not_hide_the_ones_after_it() {
        // dhcproto alone would stop at the invalid UTF-8 hostname and lose 53.
        let mut b = base();
        b.extend([12, 2, 0xff, 0xfe, 53, 1, 3, 255]);
        let d = decode(&b).unwrap();
        assert_eq!(msg_type(&d.message), Some(MessageType::Request));
        assert_eq!(d.ignored_options, vec![12]);
    }

    #[test]
    fn concatenation_and_overload() {
        // RFC 3396: two 61s concatenate. RFC 2131: 52=1 puts options in file.
        let mut b = base();
        b[FILE.start..FILE.start + 4].copy_from_slice(&[50, 2, 10, 0]);
        b[FILE.start + 4..FILE.start + 9].copy_from_slice(&[50, 2, 0, 7, 255]);
        b.extend([
            61, 2, 1, 0x52, 52, 1, 1, 61, 5, 0x54, 0, 0, 0, 1, 53, 1, 1, 255,
        ]);
        let d = decode(&b).unwrap();
        assert_eq!(
            client_id(&d.message),
            Some(&[1, 0x52, 0x54, 0, 0, 0, 1][..])
        );
        assert_eq!(requested_ip(&d.message), Some(Ipv4Addr::new(10, 0, 0, 7)));
        assert_eq!(d.message.fname(), None);
    }

    #[test]
    fn long_options_survive_a_round_trip() {
        // 300 bytes of client identifier: split in two on the wire (RFC
        // 3396), joined again on decode, whatever bytes the data holds.
        let id: Vec<u8> = (0..300u32).map(|i| (i % 7) as u8 + 60).collect();
        let mut m = Message::default();
        m.set_chaddr(&[2, 0, 0, 0, 0, 1]);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        m.opts_mut()
            .insert(DhcpOption::ClientIdentifier(id.clone()));
        let b = encode(&m, 0).unwrap();
        assert_eq!(client_id(&decode(&b).unwrap().message), Some(&id[..]));
    }

    #[test]
    fn encode_orders_and_pads() {
        let mut m = Message::default();
        m.set_opcode(dhcproto::v4::Opcode::BootReply)
            .set_chaddr(&[1, 2, 3, 4, 5, 6]);
        m.opts_mut()
            .insert(DhcpOption::SubnetMask([255, 255, 255, 0].into()));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier([10, 0, 0, 1].into()));
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        let b = encode(&m, MIN_ENCODED_LEN).unwrap();
        assert_eq!(b.len(), MIN_ENCODED_LEN);
        assert_eq!(&b[240..249], &[53, 1, 2, 54, 4, 10, 0, 0, 1]);
        assert_eq!(&b[249..255], &[1, 4, 255, 255, 255, 0]);
        assert_eq!(b[255], 255);
        let back = decode(&b).unwrap().message;
        assert_eq!(back.opts(), m.opts());
        assert_eq!(encoded_len(&m), 256);
    }
}
