//! The admin HTTP endpoint: `/metrics` (Prometheus text format), `/healthz` (the process is up)
//! and `/readyz` (the switch accepts and answers messages; 503 from the first moment of a drain).
//!
//! Three fixed GET routes answered with `Connection: close` do not justify an HTTP framework;
//! this speaks enough HTTP/1.0 and HTTP/1.1 for Prometheus, kubelet, HAProxy and curl.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Shared state the admin endpoint reports.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    /// Raised by the shards when a journal write fails (fail-stop): not ready from then on.
    failed: std::sync::OnceLock<Arc<AtomicBool>>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health {
            ready: AtomicBool::new(false),
            failed: std::sync::OnceLock::new(),
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Watches the shards' failure flag: once raised, `/readyz` answers 503.
    pub fn watch_failure(&self, flag: Arc<AtomicBool>) {
        let _ = self.failed.set(flag);
    }

    pub fn is_ready(&self) -> bool {
        let failed = self.failed.get().is_some_and(|f| f.load(Ordering::Relaxed));
        self.ready.load(Ordering::SeqCst) && !failed
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here, not across a select! arm.
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves the admin endpoint until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let metrics = metrics.clone();
                    let health = health.clone();
                    tokio::spawn(async move {
                        let handled = tokio::time::timeout(
                            Duration::from_secs(5),
                            handle(stream, &metrics, &health),
                        );
                        if let Ok(Err(e)) = handled.await {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn handle(mut stream: TcpStream, metrics: &Metrics, health: &Health) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Read the request head; the body (if any) is ignored.
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            return respond(
                &mut stream,
                "HTTP/1.1",
                431,
                "text/plain",
                b"request head too large\n",
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let version = match version {
        Some(v @ ("HTTP/1.0" | "HTTP/1.1")) => v,
        _ => return respond(&mut stream, "HTTP/1.1", 400, "text/plain", b"bad request\n").await,
    };
    let path = target.unwrap_or("/").split('?').next().unwrap_or("/");
    match (method, path) {
        (Some("GET" | "HEAD"), "/metrics") => {
            let body = metrics.render();
            respond(
                &mut stream,
                version,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
            .await
        }
        (Some("GET" | "HEAD"), "/healthz") => {
            respond(&mut stream, version, 200, "text/plain", b"ok\n").await
        }
        (Some("GET" | "HEAD"), "/readyz") => {
            if health.is_ready() {
                respond(&mut stream, version, 200, "text/plain", b"ready\n").await
            } else {
                respond(&mut stream, version, 503, "text/plain", b"not ready\n").await
            }
        }
        (Some("GET" | "HEAD"), _) => {
            respond(&mut stream, version, 404, "text/plain", b"not found\n").await
        }
        _ => {
            respond(
                &mut stream,
                version,
                405,
                "text/plain",
                b"method not allowed\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    version: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "{version} {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// `switch healthcheck`: whether the admin endpoint at `addr` answers 200 on /readyz.
pub async fn check_ready(addr: &str) -> anyhow::Result<bool> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await??;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: switch\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut response)).await??;
    let status_line = String::from_utf8_lossy(&response);
    Ok(status_line
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_failure_makes_the_switch_unready() {
        let health = Health::new();
        let flag = Arc::new(AtomicBool::new(false));
        health.watch_failure(flag.clone());
        assert!(!health.is_ready(), "not ready before start-up completes");
        health.set_ready(true);
        assert!(health.is_ready());
        flag.store(true, Ordering::Relaxed);
        assert!(!health.is_ready(), "fail-stop shows on /readyz");
    }
}
