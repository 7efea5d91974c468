//! `loadgen echo-server`: a trivial length-prefixed echo server, the capacity benchmark's
//! yardstick. It reads whatever arrived, finds the complete frames by their length headers
//! and writes them back unchanged in one write: framing and TCP only, no ISO 8583 decoding.
//! Driven by `loadgen --mode echo` (the same client code as against a switch), it measures
//! what this machine's loopback and the client can do, so the switch can be reported as a
//! fraction of that limit.

use std::io;

use bytes::BytesMut;
use codec::framing::Framing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts connections and echoes frames until the task is dropped.
pub async fn serve(listener: TcpListener, framing: Framing, max_frame: usize) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = echo(stream, framing, max_frame).await {
                eprintln!("loadgen echo-server: connection closed: {e}");
            }
        });
    }
}

async fn echo(mut stream: TcpStream, framing: Framing, max_frame: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let head = framing.header_len();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        // The complete frames at the front of the buffer.
        let mut end = 0;
        while let Some(header) = buf.get(end..end + head) {
            let len = framing.read_header(header).map_err(io::Error::other)?;
            if len > max_frame {
                return Err(io::Error::other(format!(
                    "declared frame length {len} exceeds {max_frame}"
                )));
            }
            if buf.len() < end + head + len {
                break;
            }
            end += head + len;
        }
        if end > 0 {
            let frames = buf.split_to(end);
            stream.write_all(&frames).await?;
        }
    }
}
