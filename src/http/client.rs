//! A small keep-alive HTTP/1.1 client on hyper, shared by the operator CLI, the load
//! generator and the tests. One connection, requests one at a time.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL {0:?} (expected http://HOST:PORT)")]
    Url(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// `host:port` of an `http://host:port[/...]` URL.
pub fn authority(url: &str) -> Result<String, ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.into()))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(ClientError::Url(url.into()));
    }
    Ok(if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    })
}

pub struct HttpClient {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

/// A response: status and whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl HttpClient {
    /// Connect to `host:port`.
    pub async fn connect(addr: &str) -> Result<HttpClient, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.into(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(HttpClient {
            sender,
            host: addr.to_string(),
        })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> Result<Reply, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = b.body(Full::new(body.unwrap_or_default()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    pub async fn post_json(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        token: Option<&str>,
    ) -> Result<Reply, ClientError> {
        self.request(Method::POST, path, Some(body.into()), token)
            .await
    }

    pub async fn get(&mut self, path: &str, token: Option<&str>) -> Result<Reply, ClientError> {
        self.request(Method::GET, path, None, token).await
    }
}
