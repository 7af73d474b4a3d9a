//! A small HTTP `CONNECT` proxy on loopback (RFC 9110 §9.3.6), for the tests of proxied
//! clusters: it records every `CONNECT` it is asked for (target and `Proxy-Authorization`),
//! tunnels to loopback only, and resolves `*.fleet.test` names to 127.0.0.1, so a simulated
//! cluster can be named like a remote one that only the proxy can reach.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The domain whose names the proxy resolves to 127.0.0.1 (RFC 6761 reserves `.test`).
pub const PROXIED_DOMAIN: &str = ".fleet.test";

/// One `CONNECT` request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `host:port`, as asked.
    pub target: String,
    /// The `Proxy-Authorization` header, if any.
    pub authorization: Option<String>,
}

/// A running proxy; dropping it stops it.
pub struct ConnectProxy {
    pub address: SocketAddr,
    connects: Arc<Mutex<Vec<Connect>>>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    /// Starts a proxy on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let connects = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&connects);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(tunnel(client, Arc::clone(&seen)));
            }
        });
        Ok(Self { address, connects, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every `CONNECT` received so far, in order.
    pub fn connects(&self) -> Vec<Connect> {
        self.connects.lock().expect("connects lock").clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one client connection: reads the `CONNECT` head, connects to the target (loopback
/// only) and copies bytes both ways until either side closes.
async fn tunnel(mut client: TcpStream, connects: Arc<Mutex<Vec<Connect>>>) {
    let Some(head) = read_head(&mut client).await else { return };
    let mut lines = head.lines();
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n").await;
        return;
    };
    let authorization = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, value)| value.trim().to_owned());
    connects.lock().expect("connects lock").push(Connect { target: target.to_owned(), authorization });
    let Some(address) = loopback_address(target) else {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
        return;
    };
    let Ok(mut upstream) = TcpStream::connect(address).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        return;
    };
    if client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// The request head, up to the blank line (at most 16 KiB).
async fn read_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || client.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// Where a `host:port` target is on loopback: `127.0.0.1`, `localhost` and `*.fleet.test`
/// names; `None` for anything else, which this proxy never reaches.
fn loopback_address(target: &str) -> Option<SocketAddr> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let loopback = host == "127.0.0.1" || host == "localhost" || host.ends_with(PROXIED_DOMAIN);
    loopback.then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}
