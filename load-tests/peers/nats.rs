//! A minimal NATS core client (the text protocol), written by hand so the benchmark needs no
//! new crate, over plain TCP or over nats-server's WebSocket listener (tokio-tungstenite,
//! binary frames carrying the same protocol bytes).
//!
//! Subscriber: read `INFO`, send `CONNECT` (verbose off), one `SUB` per subject, then `PING`;
//! the `PONG` proves every `SUB` was processed. Deliveries are `MSG <subject> <sid> [reply]
//! <#bytes>\r\n<payload>\r\n`; a server `PING` is answered with `PONG` so a long run is not
//! dropped. Publisher (always TCP, as a back-end service would publish): `PUB` then `PING`,
//! waiting for the `PONG` — the server handles a connection's commands in order, so the
//! `PONG` means the message was routed to every subscriber's buffer (closed loop, like an
//! HTTP POST waiting for its response or Redis's `PUBLISH` reply).

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{BoxError, Sink};

const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"invalidator-load\"}\r\n";

/// One server operation at the start of a buffer.
#[derive(Debug, PartialEq)]
pub enum Op {
    /// `MSG`: the payload's byte range in the buffer.
    Msg(std::ops::Range<usize>),
    Ping,
    Pong,
    /// `INFO`, `+OK`: nothing to do.
    Other,
}

/// Parses one operation: `Ok(None)` until it is complete; `Ok(Some((op, used)))`.
pub fn parse(buf: &[u8]) -> Result<Option<(Op, usize)>, BoxError> {
    let Some(nl) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let head = &buf[..nl];
    let after = nl + 2;
    if head.starts_with(b"MSG ") {
        let size = head
            .rsplit(|&b| b == b' ')
            .next()
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(head)))?;
        if buf.len() < after + size + 2 {
            return Ok(None);
        }
        return Ok(Some((Op::Msg(after..after + size), after + size + 2)));
    }
    let op = match head {
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        _ if head.starts_with(b"-ERR") => {
            return Err(format!("nats error: {}", String::from_utf8_lossy(head)).into());
        }
        _ => Op::Other,
    };
    Ok(Some((op, after)))
}

/// The protocol bytes a subscriber sends: CONNECT, one SUB per subject, PING.
fn subscribe_bytes(subjects: &[String]) -> Vec<u8> {
    let mut out = CONNECT.to_vec();
    for (sid, s) in subjects.iter().enumerate() {
        out.extend_from_slice(format!("SUB {s} {}\r\n", sid + 1).as_bytes());
    }
    out.extend_from_slice(b"PING\r\n");
    out
}

/// Feeds everything complete in `buf` to `sink` (timestamped `now`); returns how many server
/// PINGs and PONGs it consumed.
fn drain(buf: &mut BytesMut, sink: &Sink, now: u64) -> Result<(usize, usize), BoxError> {
    let (mut pings, mut pongs) = (0, 0);
    let mut batch = sink.batch();
    while let Some((op, used)) = parse(buf)? {
        match op {
            Op::Msg(p) => batch.record(&buf[p], now),
            Op::Ping => pings += 1,
            Op::Pong => pongs += 1,
            Op::Other => {}
        }
        buf.advance(used);
    }
    Ok((pings, pongs))
}

/// TCP subscriber on `subjects`; returns once the server confirmed them (PONG).
pub async fn tcp_subscriber(
    addr: &str,
    subjects: &[String],
    sink: Sink,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&subscribe_bytes(subjects)).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err("nats closed the connection while subscribing".into());
        }
        let (_, pongs) = drain(&mut buf, &sink, 0)?;
        if pongs > 0 {
            break;
        }
    }
    Ok(tokio::spawn(async move {
        let result: Result<(), BoxError> = async {
            loop {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
                let (pings, _) = drain(&mut buf, &sink, sink.now_ns())?;
                for _ in 0..pings {
                    stream.write_all(b"PONG\r\n").await?;
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(64 * 1024);
                }
            }
        }
        .await;
        if let Err(e) = result {
            eprintln!("nats subscriber: {e}");
        }
    }))
}

/// WebSocket subscriber on `subjects` (`url` like `ws://127.0.0.1:14223`).
pub async fn ws_subscriber(
    url: &str,
    subjects: &[String],
    sink: Sink,
) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    // tungstenite zero-fills its read buffer before reads: a small one keeps 1,000 clients
    // cheap (the same setting our own WebSocket subscribers use).
    let config = WebSocketConfig::default().read_buffer_size(16 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    ws.send(Message::binary(subscribe_bytes(subjects))).await?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => return Err("nats closed the WebSocket while subscribing".into()),
        }
        let (_, pongs) = drain(&mut buf, &sink, 0)?;
        if pongs > 0 {
            break;
        }
    }
    Ok(tokio::spawn(async move {
        let result: Result<(), BoxError> = async {
            while let Some(msg) = ws.next().await {
                match msg? {
                    Message::Binary(b) => buf.extend_from_slice(&b),
                    Message::Text(t) => buf.extend_from_slice(t.as_bytes()),
                    Message::Close(_) => return Ok(()),
                    _ => continue,
                }
                let (pings, _) = drain(&mut buf, &sink, sink.now_ns())?;
                for _ in 0..pings {
                    ws.send(Message::binary(&b"PONG\r\n"[..])).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("nats websocket subscriber: {e}");
        }
    }))
}

/// A publishing TCP connection (closed loop: PUB, PING, wait for PONG).
pub struct Publisher {
    stream: TcpStream,
    out: Vec<u8>,
    buf: BytesMut,
}

impl Publisher {
    pub async fn connect(addr: &str) -> Result<Publisher, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut p = Publisher {
            stream,
            out: Vec::with_capacity(512),
            buf: BytesMut::with_capacity(4096),
        };
        p.stream.write_all(CONNECT).await?;
        p.stream.write_all(b"PING\r\n").await?;
        p.wait_pong().await?;
        Ok(p)
    }

    async fn wait_pong(&mut self) -> Result<(), BoxError> {
        loop {
            while let Some((op, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                if op == Op::Pong {
                    return Ok(());
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err("nats closed the publishing connection".into());
            }
        }
    }

    pub async fn publish(&mut self, subject: &[u8], payload: &[u8]) -> Result<(), BoxError> {
        self.out.clear();
        self.out.extend_from_slice(b"PUB ");
        self.out.extend_from_slice(subject);
        self.out
            .extend_from_slice(format!(" {}\r\n", payload.len()).as_bytes());
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\nPING\r\n");
        self.stream.write_all(&self.out).await?;
        self.wait_pong().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ops_and_waits_for_whole_messages() {
        let msg = b"MSG p1.7 3 5\r\nhello\r\n";
        assert_eq!(parse(msg).unwrap(), Some((Op::Msg(14..19), msg.len())));
        for cut in 0..msg.len() {
            assert_eq!(parse(&msg[..cut]).unwrap(), None, "cut at {cut}");
        }
        let with_reply = b"MSG a 1 _INBOX.x 2\r\nhi\r\n";
        assert_eq!(parse(with_reply).unwrap(), Some((Op::Msg(20..22), 24)));
        assert_eq!(parse(b"PING\r\n").unwrap(), Some((Op::Ping, 6)));
        assert_eq!(parse(b"PONG\r\nMSG").unwrap(), Some((Op::Pong, 6)));
        assert_eq!(parse(b"INFO {\"a\":1}\r\n").unwrap(), Some((Op::Other, 14)));
        assert!(parse(b"-ERR 'Unknown Protocol Operation'\r\n").is_err());
    }

    #[test]
    fn subscribes_with_one_sid_per_subject() {
        let b = subscribe_bytes(&["fanout".into(), "p1.>".into()]);
        let s = String::from_utf8(b).unwrap();
        assert!(s.starts_with("CONNECT {"));
        assert!(s.ends_with("SUB fanout 1\r\nSUB p1.> 2\r\nPING\r\n"));
    }
}
