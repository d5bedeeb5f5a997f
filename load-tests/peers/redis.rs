//! A minimal Redis pub/sub client (RESP2), written by hand so the benchmark needs no new crate:
//! `SUBSCRIBE` / `PSUBSCRIBE` on the subscriber side, `PUBLISH` on the publisher side.
//!
//! Only what pub/sub sends back is parsed: arrays of bulk strings and integers (`message`,
//! `pmessage`, `subscribe`/`psubscribe` confirmations, the `:N` reply of `PUBLISH`) and error
//! lines. The parser works on a byte buffer and returns ranges into it, so a delivery costs no
//! allocation.

use std::ops::Range;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BoxError, Sink};

/// One element of a parsed reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Bulk(Range<usize>),
    Int(i64),
    Nil,
}

/// A parsed top-level reply: a push array (up to 4 elements, which is all pub/sub uses) or a
/// single integer / status.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Array(usize, [Item; 4]),
    Int(i64),
    Status,
}

/// The `\r\n`-terminated line starting at `at`: (line range, index after the `\r\n`).
fn line(buf: &[u8], at: usize) -> Option<(Range<usize>, usize)> {
    let rest = buf.get(at..)?;
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((at..at + nl, at + nl + 2))
}

fn int(bytes: &[u8]) -> Result<i64, BoxError> {
    Ok(std::str::from_utf8(bytes)?.parse()?)
}

/// One element at `at`: (item, next index), or `None` when the buffer is short.
fn item(buf: &[u8], at: usize) -> Result<Option<(Item, usize)>, BoxError> {
    let Some((l, next)) = line(buf, at) else {
        return Ok(None);
    };
    let head = &buf[l.clone()];
    match head.first() {
        Some(b'$') => {
            let len = int(&head[1..])?;
            if len < 0 {
                return Ok(Some((Item::Nil, next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Item::Bulk(next..end), end + 2)))
        }
        Some(b':') => Ok(Some((Item::Int(int(&head[1..])?), next))),
        Some(b'-') => Err(format!("redis error: {}", String::from_utf8_lossy(head)).into()),
        _ => Err(format!(
            "unexpected RESP element {:?}",
            String::from_utf8_lossy(head)
        )
        .into()),
    }
}

/// One reply at the start of `buf`: `Ok(None)` until it is complete; `Ok(Some((reply, used)))`.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, BoxError> {
    let Some((l, mut next)) = line(buf, 0) else {
        return Ok(None);
    };
    let head = &buf[l];
    match head.first() {
        Some(b'*') => {
            let n = int(&head[1..])?;
            if !(0..=4).contains(&n) {
                return Err(format!("RESP array of {n} elements").into());
            }
            let mut items = [Item::Nil, Item::Nil, Item::Nil, Item::Nil];
            for slot in items.iter_mut().take(n as usize) {
                match item(buf, next)? {
                    Some((it, after)) => {
                        *slot = it;
                        next = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(n as usize, items), next)))
        }
        Some(b':') => Ok(Some((Reply::Int(int(&head[1..])?), next))),
        Some(b'+') => Ok(Some((Reply::Status, next))),
        Some(b'-') => Err(format!("redis error: {}", String::from_utf8_lossy(head)).into()),
        _ => Err(format!("unexpected RESP reply {:?}", String::from_utf8_lossy(head)).into()),
    }
}

/// Appends a RESP command (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// What a subscriber listens to: one channel (`SUBSCRIBE`) or glob patterns (`PSUBSCRIBE`).
pub enum Listen<'a> {
    Channel(&'a str),
    Patterns(&'a [String]),
}

/// Connects, subscribes, waits for every confirmation, then spawns the reading loop that hands
/// each delivered payload to `sink`.
pub async fn subscriber(
    addr: &str,
    listen: Listen<'_>,
    sink: Sink,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::new();
    let expect = match listen {
        Listen::Channel(c) => {
            command(&mut out, &[b"SUBSCRIBE", c.as_bytes()]);
            1
        }
        Listen::Patterns([]) => 0,
        Listen::Patterns(ps) => {
            let mut args: Vec<&[u8]> = vec![b"PSUBSCRIBE"];
            args.extend(ps.iter().map(|p| p.as_bytes()));
            command(&mut out, &args);
            ps.len()
        }
    };
    if !out.is_empty() {
        stream.write_all(&out).await?;
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut confirmed = 0;
    while confirmed < expect {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("redis closed the connection while subscribing".into());
        }
        while let Some((_, used)) = parse(&buf)? {
            buf.advance(used);
            confirmed += 1;
        }
    }
    Ok(tokio::spawn(async move {
        if let Err(e) = read_loop(stream, buf, sink).await {
            eprintln!("redis subscriber: {e}");
        }
    }))
}

async fn read_loop(mut stream: TcpStream, mut buf: BytesMut, sink: Sink) -> Result<(), BoxError> {
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let now = sink.now_ns();
        let mut batch = sink.batch();
        while let Some((reply, used)) = parse(&buf)? {
            // `message` is [kind, channel, payload]; `pmessage` is [kind, pattern, channel, payload].
            if let Reply::Array(n @ (3 | 4), items) = &reply
                && let Item::Bulk(p) = &items[n - 1]
            {
                batch.record(&buf[p.clone()], now);
            }
            buf.advance(used);
        }
        drop(batch);
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
    }
}

/// A publishing connection: one `PUBLISH` at a time, each waiting for its `:N` reply (closed
/// loop, like an HTTP POST waiting for its response).
pub struct Publisher {
    stream: TcpStream,
    out: Vec<u8>,
    buf: BytesMut,
}

impl Publisher {
    pub async fn connect(addr: &str) -> Result<Publisher, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Publisher {
            stream,
            out: Vec::with_capacity(512),
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// `PUBLISH channel payload`; returns the receiver count Redis reports.
    pub async fn publish(&mut self, channel: &[u8], payload: &[u8]) -> Result<i64, BoxError> {
        self.out.clear();
        command(&mut self.out, &[b"PUBLISH", channel, payload]);
        self.stream.write_all(&self.out).await?;
        loop {
            if let Some((reply, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                return match reply {
                    Reply::Int(n) => Ok(n),
                    other => Err(format!("unexpected PUBLISH reply {other:?}").into()),
                };
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err("redis closed the publishing connection".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_confirmations_and_partial_input() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$5\r\nhello\r\n";
        let (reply, used) = parse(msg).unwrap().unwrap();
        assert_eq!(used, msg.len());
        let Reply::Array(3, items) = reply else {
            panic!("not an array")
        };
        assert_eq!(items[2], Item::Bulk(msg.len() - 7..msg.len() - 2));
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]).unwrap(), None, "cut at {cut}");
        }
        let conf = b"*3\r\n$10\r\npsubscribe\r\n$4\r\np1:*\r\n:1\r\n";
        let (reply, _) = parse(conf).unwrap().unwrap();
        assert!(matches!(reply, Reply::Array(3, [_, _, Item::Int(1), _])));
        assert_eq!(parse(b":42\r\n").unwrap(), Some((Reply::Int(42), 5)));
        assert!(parse(b"-ERR nope\r\n").is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"c", b"xy"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nc\r\n$2\r\nxy\r\n");
    }
}
