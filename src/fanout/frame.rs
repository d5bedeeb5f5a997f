//! Pre-encoded WebSocket text frames.
//!
//! Server-to-client frames are never masked (RFC 6455 §5.1), so one encoded frame (header and
//! payload) can be written as-is to every connection that receives the same event. We
//! serialise the JSON once into a buffer that leaves room for the largest header (10 bytes),
//! then write the header just in front of the payload: one allocation, no copy, and the
//! resulting [`Bytes`] is shared by reference count between connection queues.
//!
//! Cost: one `Vec` allocation per distinct frame, sized from a guess and grown by serde_json.

use bytes::Bytes;
use serde::Serialize;
use serde::ser::SerializeSeq;

use crate::event::Invalidation;

/// Room reserved in front of the payload for the frame header.
const HEADER_ROOM: usize = 10;

/// FIN bit set, opcode 1 (text).
const FIN_TEXT: u8 = 0x81;

/// Build a text frame whose payload `write` appends to the buffer it is given.
fn text_frame_with(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(HEADER_ROOM + capacity);
    buf.resize(HEADER_ROOM, 0);
    write(&mut buf);
    let len = buf.len() - HEADER_ROOM;
    let start = if len < 126 {
        buf[HEADER_ROOM - 2] = FIN_TEXT;
        buf[HEADER_ROOM - 1] = len as u8;
        HEADER_ROOM - 2
    } else if len <= u16::MAX as usize {
        buf[HEADER_ROOM - 4] = FIN_TEXT;
        buf[HEADER_ROOM - 3] = 126;
        buf[HEADER_ROOM - 2..HEADER_ROOM].copy_from_slice(&(len as u16).to_be_bytes());
        HEADER_ROOM - 4
    } else {
        buf[0] = FIN_TEXT;
        buf[1] = 127;
        buf[2..HEADER_ROOM].copy_from_slice(&(len as u64).to_be_bytes());
        0
    };
    Bytes::from(buf).slice(start..)
}

/// A complete text frame carrying `value` as JSON.
///
/// Serialising our own frame types into a `Vec` cannot fail (no maps with non-string keys, no
/// I/O); should it ever, the frame carries a JSON error object instead of truncated JSON.
pub fn json_frame<T: Serialize + ?Sized>(value: &T) -> Bytes {
    text_frame_with(128, |buf| {
        let mark = buf.len();
        if serde_json::to_writer(&mut *buf, value).is_err() {
            buf.truncate(mark);
            buf.extend_from_slice(
                br#"{"type":"error","code":"internal","message":"frame encoding failed"}"#,
            );
        }
    })
}

/// The payload of a frame (the bytes after the header).
pub fn payload(frame: &[u8]) -> &[u8] {
    match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => frame.get(4..).unwrap_or(&[]),
        Some(127) => frame.get(HEADER_ROOM..).unwrap_or(&[]),
        Some(_) => frame.get(2..).unwrap_or(&[]),
        None => &[],
    }
}

/// The keys of an event: either a subset of the invalidation's keys (by index, in request
/// order) or a list of key strings.
pub enum EventKeys<'a> {
    /// Every key of a key invalidation.
    All(&'a [String]),
    /// The keys at these indexes (increasing).
    Indexed(&'a [String], &'a [u32]),
    /// Explicit keys (tracked keys reached by a pattern invalidation, byte order).
    Named(&'a [String]),
    /// A pattern invalidation reaching a connection only through a subscription.
    None,
}

impl Serialize for EventKeys<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EventKeys::All(keys) | EventKeys::Named(keys) => keys.serialize(s),
            EventKeys::Indexed(keys, idx) => {
                let mut seq = s.serialize_seq(Some(idx.len()))?;
                for &i in idx.iter() {
                    if let Some(k) = keys.get(i as usize) {
                        seq.serialize_element(k)?;
                    }
                }
                seq.end()
            }
            EventKeys::None => s.serialize_seq(Some(0))?.end(),
        }
    }
}

/// SPEC's `invalidate` frame.
#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(rename = "type")]
    ty: &'static str,
    seq: u64,
    epoch: &'a str,
    request_id: &'a str,
    triggered_by: &'a str,
    published_at: &'a str,
    keys: EventKeys<'a>,
    pattern: Option<&'a str>,
    pattern_type: Option<&'static str>,
    /// Tags of a tag invalidation; null for keys and patterns.
    tags: Option<&'a [String]>,
    soft: bool,
}

/// The parts of an `invalidate` frame that do not depend on the receiving connection;
/// computed once per invalidation.
pub struct EventEncoder<'a> {
    inv: &'a Invalidation,
    epoch: &'a str,
    published_at: String,
}

impl<'a> EventEncoder<'a> {
    pub fn new(inv: &'a Invalidation, epoch: &'a str) -> Self {
        EventEncoder {
            inv,
            epoch,
            published_at: inv.published_at_rfc3339(),
        }
    }

    /// One complete frame for `keys`.
    pub fn encode(&self, keys: EventKeys<'_>) -> Bytes {
        let inv = self.inv;
        let value = EventJson {
            ty: "invalidate",
            seq: inv.seq,
            epoch: self.epoch,
            request_id: &inv.request_id,
            triggered_by: &inv.triggered_by,
            published_at: &self.published_at,
            keys,
            pattern: inv.pattern().map(|p| p.canonical()),
            pattern_type: inv.pattern_type().map(|t| t.as_str()),
            tags: None,
            soft: inv.soft,
        };
        json_frame(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_len(frame: &[u8]) -> usize {
        frame.len() - payload(frame).len()
    }

    #[test]
    fn header_sizes_follow_rfc6455() {
        for (len, header) in [
            (0usize, 2usize),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
        ] {
            let text = "x".repeat(len.saturating_sub(2));
            let frame = json_frame(&text);
            assert_eq!(payload(&frame).len(), len.max(2));
            assert_eq!(frame[0], 0x81);
            if len >= 2 {
                assert_eq!(header_len(&frame), header, "payload {len}");
            }
        }
    }

    #[test]
    fn frame_round_trips_through_tungstenite() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        let frame = json_frame(&serde_json::json!({"a": "b".repeat(300)}));
        let mut cursor = std::io::Cursor::new(&frame[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final);
        assert_eq!(len as usize, payload(&frame).len());
        let v: serde_json::Value = serde_json::from_slice(payload(&frame)).unwrap();
        assert_eq!(v["a"].as_str().unwrap().len(), 300);
    }

    #[test]
    fn indexed_keys_keep_order() {
        let keys = vec!["a".to_string(), "b".into(), "c".into()];
        let v = serde_json::to_value(EventKeys::Indexed(&keys, &[0, 2])).unwrap();
        assert_eq!(v, serde_json::json!(["a", "c"]));
        let v = serde_json::to_value(EventKeys::None).unwrap();
        assert_eq!(v, serde_json::json!([]));
    }
}
