//! PROXY protocol version 2 on the ISO listener (HAProxy's binary header, also sent by AWS NLB
//! and other L4 load balancers): behind a proxy every connection comes from the proxy's address,
//! and the header carries the terminal's or acquirer's own address so logs can name it.
//!
//! Off by default. When on (`proxy_protocol = true`, `--proxy-protocol`) it is required: every
//! connection must begin with a valid v2 header within [`HEADER_TIMEOUT`], or it is closed, logged
//! and counted in `switch_connections_closed_total{reason="proxy_header"}`. A switch that accepted
//! connections with and without the header could be fooled by a client that sends one itself, so
//! there is no "optional" mode; only the proxy must be able to reach a listener that has it on.
//!
//! Exactly the header's bytes are read (16 fixed bytes, then the length they declare), so the
//! framer that takes over the socket next starts at the first ISO 8583 length header. Parsing and
//! validation are the `ppp` crate's; this module adds the bounded, timed read and the policy
//! (LOCAL and unspecified or UNIX addresses fall back to the TCP peer, as the specification says).
//! Errors describe the header, never echo the bytes a client sent instead of one.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a new connection may take to send its PROXY header. Proxies send it at once, with
/// or before the first bytes of the client's own; anything slower is not a proxy.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// The fixed part of a v2 header: 12-byte signature, version and command, family and
/// protocol, 2-byte length of what follows.
const FIXED_LEN: usize = 16;

/// Largest address block plus TLVs accepted. HAProxy sends 12 (IPv4) or 36 (IPv6) bytes plus a
/// few TLVs; AWS NLB adds a VPC endpoint TLV; the UNIX family takes 216. 4 KiB is ample and
/// bounds what an impostor can make the switch buffer.
pub const MAX_PAYLOAD: usize = 4096;

/// Where a proxied connection really comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxiedPeer {
    /// The client's address as the proxy saw it; the TCP peer for LOCAL headers (the proxy's own
    /// health checks) and for address families that carry no IP address.
    pub client: SocketAddr,
    /// The TCP peer: the proxy itself.
    pub proxy: SocketAddr,
}

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("no PROXY v2 header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before a complete PROXY v2 header")]
    Closed,
    #[error("reading the PROXY v2 header: {0}")]
    Io(std::io::Error),
    #[error("a PROXY v1 (text) header; only v2 is accepted (HAProxy: send-proxy-v2)")]
    Version1,
    #[error("no PROXY v2 signature at the start of the connection")]
    NoSignature,
    #[error("PROXY v2 header declares {0} bytes of addresses and TLVs, more than {MAX_PAYLOAD}")]
    TooLong(usize),
    #[error("invalid PROXY v2 header: {0}")]
    Invalid(#[from] v2::ParseError),
    #[error("PROXY v2 header for a datagram protocol on a stream connection")]
    Datagram,
}

/// Reads and validates one PROXY v2 header from the start of `stream`, within [`HEADER_TIMEOUT`].
pub async fn read_header<R: AsyncRead + Unpin>(
    stream: &mut R,
    peer: SocketAddr,
) -> Result<ProxiedPeer, ProxyError> {
    read_header_within(stream, peer, HEADER_TIMEOUT).await
}

/// [`read_header`] with another time limit.
pub async fn read_header_within<R: AsyncRead + Unpin>(
    stream: &mut R,
    peer: SocketAddr,
    limit: Duration,
) -> Result<ProxiedPeer, ProxyError> {
    tokio::time::timeout(limit, read_untimed(stream, peer))
        .await
        .unwrap_or(Err(ProxyError::Timeout(limit)))
}

async fn read_untimed<R: AsyncRead + Unpin>(
    stream: &mut R,
    peer: SocketAddr,
) -> Result<ProxiedPeer, ProxyError> {
    let mut fixed = [0u8; FIXED_LEN];
    read_exact(stream, &mut fixed).await?;
    if !fixed.starts_with(v2::PROTOCOL_PREFIX) {
        return Err(if fixed.starts_with(b"PROXY ") {
            ProxyError::Version1
        } else {
            ProxyError::NoSignature
        });
    }
    let declared = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if declared > MAX_PAYLOAD {
        return Err(ProxyError::TooLong(declared));
    }
    let mut header = Vec::with_capacity(FIXED_LEN + declared);
    header.extend_from_slice(&fixed);
    header.resize(FIXED_LEN + declared, 0);
    read_exact(stream, &mut header[FIXED_LEN..]).await?;
    interpret(&header, peer)
}

async fn read_exact<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut [u8],
) -> Result<(), ProxyError> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProxyError::Closed),
        Err(e) => Err(ProxyError::Io(e)),
    }
}

/// Validates a complete header (exactly its bytes) and picks the client's address.
pub fn interpret(header: &[u8], peer: SocketAddr) -> Result<ProxiedPeer, ProxyError> {
    let parsed = v2::Header::try_from(header)?;
    // TLVs are not used, but a header whose TLV area does not parse is not a valid header.
    for tlv in parsed.tlvs() {
        tlv?;
    }
    let from_proxy = ProxiedPeer {
        client: peer,
        proxy: peer,
    };
    if parsed.command == v2::Command::Local {
        // The proxy speaking for itself (health checks): the real endpoints are the TCP ones.
        return Ok(from_proxy);
    }
    if parsed.protocol == v2::Protocol::Datagram {
        return Err(ProxyError::Datagram);
    }
    let client = match parsed.addresses {
        v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        // No IP address to report: keep the TCP peer.
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => return Ok(from_proxy),
    };
    Ok(ProxiedPeer {
        client,
        proxy: peer,
    })
}

/// A v2 PROXY header for a TCP connection from `client` to `server` (both IPv4 or both IPv6),
/// as a proxy would send it. For tests and tools that stand in for a proxy.
pub fn encode_v2(client: SocketAddr, server: SocketAddr) -> std::io::Result<Vec<u8>> {
    if client.is_ipv4() != server.is_ipv4() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "client and server addresses must be of one family",
        ));
    }
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, server),
    )
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    const PEER: &str = "10.0.0.5:51000";

    async fn read(bytes: &[u8]) -> Result<ProxiedPeer, ProxyError> {
        let mut input = bytes;
        read_header_within(&mut input, addr(PEER), Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn ipv4_and_ipv6_headers_give_the_client_address() {
        let h = encode_v2(addr("203.0.113.7:40000"), addr("10.0.0.9:8583")).expect("encodes");
        assert_eq!(h.len(), 28);
        let got = read(&h).await.expect("valid");
        assert_eq!(got.client, addr("203.0.113.7:40000"));
        assert_eq!(got.proxy, addr(PEER));
        let h = encode_v2(addr("[2001:db8::7]:40000"), addr("[2001:db8::1]:8583")).expect("v6");
        assert_eq!(
            read(&h).await.expect("valid").client,
            addr("[2001:db8::7]:40000")
        );
    }

    #[tokio::test]
    async fn exactly_the_header_is_consumed() {
        let mut bytes = encode_v2(addr("203.0.113.7:40000"), addr("10.0.0.9:8583")).expect("h");
        bytes.extend_from_slice(&[0x00, 0x04, b'0', b'8', b'0', b'0']);
        let mut input = &bytes[..];
        read_header_within(&mut input, addr(PEER), Duration::from_secs(1))
            .await
            .expect("valid");
        assert_eq!(input, &[0x00, 0x04, b'0', b'8', b'0', b'0']);
    }

    #[tokio::test]
    async fn local_command_and_unspecified_family_keep_the_tcp_peer() {
        let mut local = v2::PROTOCOL_PREFIX.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(read(&local).await.expect("local").client, addr(PEER));
        let mut unspec = v2::PROTOCOL_PREFIX.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0x00, 0x00]);
        assert_eq!(read(&unspec).await.expect("unspec").client, addr(PEER));
    }

    #[tokio::test]
    async fn missing_garbled_and_oversized_headers_are_refused() {
        // An ISO 8583 frame where the header should be.
        let iso = [
            0x00, 0x10, b'0', b'8', b'0', b'0', 0x82, 0x20, 0, 0, 0, 0, 0, 0, 4, 0,
        ];
        assert!(matches!(read(&iso).await, Err(ProxyError::NoSignature)));
        assert!(matches!(
            read(b"PROXY TCP4 203.0.113.7 10.0.0.9 40000 8583\r\n").await,
            Err(ProxyError::Version1)
        ));
        let good = encode_v2(addr("203.0.113.7:40000"), addr("10.0.0.9:8583")).expect("h");
        // Truncated: the connection ends inside the header.
        assert!(matches!(read(&good[..20]).await, Err(ProxyError::Closed)));
        // Version 3.
        let mut bad = good.clone();
        bad[12] = 0x31;
        assert!(matches!(read(&bad).await, Err(ProxyError::Invalid(_))));
        // Command 0xF.
        let mut bad = good.clone();
        bad[12] = 0x2F;
        assert!(matches!(read(&bad).await, Err(ProxyError::Invalid(_))));
        // IPv4 with a length too short for its addresses.
        let mut bad = good.clone();
        bad[15] = 4;
        bad.truncate(20);
        assert!(matches!(read(&bad).await, Err(ProxyError::Invalid(_))));
        // A TLV running past the end.
        let mut bad = good.clone();
        bad[15] = 12 + 3;
        bad.extend_from_slice(&[0x04, 0x00, 0x09]);
        assert!(matches!(read(&bad).await, Err(ProxyError::Invalid(_))));
        // Datagram.
        let mut bad = good.clone();
        bad[13] = 0x12;
        assert!(matches!(read(&bad).await, Err(ProxyError::Datagram)));
        // A declared length beyond the bound is refused before anything is buffered.
        let mut bad = good[..16].to_vec();
        bad[14] = 0xFF;
        bad[15] = 0xFF;
        assert!(matches!(read(&bad).await, Err(ProxyError::TooLong(65_535))));
    }

    #[tokio::test]
    async fn a_silent_connection_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let got = read_header_within(&mut server, addr(PEER), Duration::from_millis(200)).await;
        assert!(matches!(got, Err(ProxyError::Timeout(_))), "{got:?}");
        // Keep the client open until here: the timeout, not EOF, ended the read.
        tokio::io::AsyncWriteExt::shutdown(&mut client)
            .await
            .expect("shutdown");
    }
}
