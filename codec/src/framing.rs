//! TCP length framing (PROTOCOL.md section 1): every message on a connection is preceded by a
//! header giving the length of what follows, the header itself not counted.
//!
//! | [`Framing`] | header | largest body it can announce |
//! |---|---|---|
//! | `len2` (default) | 2-byte unsigned big-endian | 65 535 |
//! | `len4` | 4-byte unsigned big-endian | 4 294 967 295 |
//! | `ascii4` | 4 ASCII decimal digits (`"0123"`) | 9 999 |
//! | `bcd2` | 2 bytes packed BCD (`01 23`) | 9 999 |
//!
//! [`LengthFramer`] is a `tokio_util::codec` [`Decoder`] and [`Encoder`] for one framing with a
//! maximum frame size (default [`DEFAULT_MAX_FRAME`], 8192 bytes). It only splits the byte
//! stream into frames: parsing a frame into a message is [`crate::Message::decode`]'s job.
//!
//! Decoding is a two-state machine (`Head`, `Data(len)`) after tokio-util's `length_delimited`:
//!
//! - too few bytes for a header or a body is `Ok(None)`, never an error;
//! - the declared length is compared with the maximum *before* any buffer space is reserved, so
//!   a hostile header never makes the switch allocate what it declares
//!   ([`FrameError::TooLarge`]); a header that is not a number is [`FrameError::BadHeader`].
//!   After either error the stream cannot be resynchronised: close the connection;
//! - a frame is handed out as `split_to(n).freeze()`, sharing the read buffer (no copy);
//! - a zero-length frame (header `0`) is handed out as an empty `Bytes`. Some terminals send
//!   one as a keep-alive; the layer above decides what to do with it (an empty frame never
//!   decodes as a message).
//!
//! Encoding either takes a finished body ([`Encoder<Bytes>`], [`Encoder<&[u8]>`]) or, with no
//! intermediate buffer, lets the caller write the body straight into the output after a header
//! placeholder that is patched once the body's length is known ([`encode_frame_with`],
//! [`LengthFramer::encode_with`], [`Encoder<&MessageBuilder>`]), so a batch of responses can be
//! written into one buffer and flushed with one write.
//!
//! With several `Encoder` impls, a `Framed` sink's `flush` and `close` (which take no item)
//! need the item type spelled out: `SinkExt::<Bytes>::flush(&mut framed)`; `send` and `feed`
//! infer it from their argument.
//!
//! ```
//! use bytes::BytesMut;
//! use codec::framing::{Framing, LengthFramer};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut framer = LengthFramer::new("ascii4".parse::<Framing>().unwrap());
//! let mut wire = BytesMut::new();
//! framer.encode(&b"hello"[..], &mut wire).unwrap();
//! assert_eq!(&wire[..], b"0005hello");
//!
//! let mut input = BytesMut::from(&wire[..3]);
//! assert!(framer.decode(&mut input).unwrap().is_none()); // header incomplete
//! input.extend_from_slice(&wire[3..]);
//! assert_eq!(&framer.decode(&mut input).unwrap().unwrap()[..], b"hello");
//! ```

use std::fmt;
use std::io;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::encode::MessageBuilder;
use crate::error::EncodeError;

/// The maximum frame size (body bytes, header not counted) unless configured otherwise.
pub const DEFAULT_MAX_FRAME: usize = 8192;

/// The maximum frame sizes a switch or loadgen accepts as a setting: from the smallest useful
/// message to what a `len2` header can declare.
pub const MAX_FRAME_SETTING: std::ops::RangeInclusive<usize> = 20..=65_535;

// ===== Framing =====

/// Which length header precedes each message on a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// 2-byte unsigned big-endian.
    #[default]
    Len2,
    /// 4-byte unsigned big-endian.
    Len4,
    /// 4 ASCII decimal digits.
    Ascii4,
    /// 2 bytes of packed BCD (4 decimal digits).
    Bcd2,
}

impl Framing {
    /// Every framing, the default first.
    pub const ALL: [Framing; 4] = [Framing::Len2, Framing::Len4, Framing::Ascii4, Framing::Bcd2];

    /// The name used in configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Len2 => "len2",
            Framing::Len4 => "len4",
            Framing::Ascii4 => "ascii4",
            Framing::Bcd2 => "bcd2",
        }
    }

    /// Bytes of the header.
    pub fn header_len(self) -> usize {
        match self {
            Framing::Len2 | Framing::Bcd2 => 2,
            Framing::Len4 | Framing::Ascii4 => 4,
        }
    }

    /// The largest body length the header can express.
    pub fn capacity(self) -> usize {
        match self {
            Framing::Len2 => u16::MAX as usize,
            Framing::Len4 => usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            Framing::Ascii4 | Framing::Bcd2 => 9999,
        }
    }

    /// The body length a complete header announces. `header` must be exactly
    /// [`Framing::header_len`] bytes, else [`FrameError::BadHeader`].
    pub fn read_header(self, header: &[u8]) -> Result<usize, FrameError> {
        if header.len() != self.header_len() {
            return Err(FrameError::BadHeader);
        }
        let n = match self {
            Framing::Len2 | Framing::Len4 => {
                header.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))
            }
            Framing::Ascii4 => header
                .iter()
                .try_fold(0u64, |acc, &c| {
                    c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
                })
                .ok_or(FrameError::BadHeader)?,
            Framing::Bcd2 => header
                .iter()
                .try_fold(0u64, |acc, &b| {
                    let (hi, lo) = (b >> 4, b & 0xf);
                    (hi <= 9 && lo <= 9).then(|| acc * 100 + u64::from(hi * 10 + lo))
                })
                .ok_or(FrameError::BadHeader)?,
        };
        // At most 2^32 - 1: only a 16-bit usize could fail here, and then it is too large anyway.
        usize::try_from(n).map_err(|_| FrameError::TooLarge {
            declared: usize::MAX,
            max: self.capacity(),
        })
    }

    /// Writes the header announcing `len` body bytes into `out` (exactly
    /// [`Framing::header_len`] bytes long). Fails when `len` exceeds [`Framing::capacity`].
    pub fn write_header(self, len: usize, out: &mut [u8]) -> Result<(), FrameError> {
        if len > self.capacity() {
            return Err(FrameError::TooLarge {
                declared: len,
                max: self.capacity(),
            });
        }
        if out.len() != self.header_len() {
            return Err(FrameError::BadHeader);
        }
        // `len` fits the header (checked above), so the truncating casts below are exact.
        let digits = [len / 1000 % 10, len / 100 % 10, len / 10 % 10, len % 10].map(|d| d as u8);
        match self {
            Framing::Len2 => out.copy_from_slice(&(len as u16).to_be_bytes()),
            Framing::Len4 => out.copy_from_slice(&(len as u32).to_be_bytes()),
            Framing::Ascii4 => out.copy_from_slice(&digits.map(|d| b'0' + d)),
            Framing::Bcd2 => {
                out.copy_from_slice(&[digits[0] << 4 | digits[1], digits[2] << 4 | digits[3]])
            }
        }
        Ok(())
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Framing {
    type Err = UnknownFraming;

    fn from_str(s: &str) -> Result<Framing, UnknownFraming> {
        Framing::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFraming(s.to_owned()))
    }
}

/// A framing name that is none of `len2`, `len4`, `ascii4`, `bcd2`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown framing {0:?} (expected len2, len4, ascii4 or bcd2)")]
pub struct UnknownFraming(pub String);

// ===== FrameError =====

/// Why the byte stream could not be framed, or a frame not written. Never carries frame bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A header declares more than the configured maximum (or a body to encode is longer than
    /// the maximum or than the header can express). Nothing of the declared size was reserved.
    #[error("frame length {declared} exceeds the maximum {max}")]
    TooLarge { declared: usize, max: usize },
    /// An `ascii4` header that is not four decimal digits, or a `bcd2` header with a nibble
    /// above 9.
    #[error("length header is not a valid number")]
    BadHeader,
    /// The stream ended inside a header or a body.
    #[error("connection closed inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    /// The body written by [`encode_frame_with`]'s closure could not be encoded.
    #[error("cannot encode frame body: {0}")]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<std::convert::Infallible> for FrameError {
    fn from(never: std::convert::Infallible) -> FrameError {
        match never {}
    }
}

// ===== LengthFramer =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Head,
    Data(usize),
}

/// Splits a byte stream into frames by their length header, and writes frames with one.
#[derive(Debug, Clone)]
pub struct LengthFramer {
    framing: Framing,
    max_frame: usize,
    state: DecodeState,
}

impl Default for LengthFramer {
    /// `len2` with the default maximum of 8192 bytes.
    fn default() -> Self {
        LengthFramer::new(Framing::default())
    }
}

impl LengthFramer {
    /// A framer with the default maximum frame size ([`DEFAULT_MAX_FRAME`]).
    pub fn new(framing: Framing) -> Self {
        LengthFramer {
            framing,
            max_frame: DEFAULT_MAX_FRAME,
            state: DecodeState::Head,
        }
    }

    /// Sets the largest body accepted or written, header not counted. A larger header is
    /// [`FrameError::TooLarge`].
    pub fn with_max_frame(mut self, max: usize) -> Self {
        self.max_frame = max;
        self
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The largest body this framer writes: its maximum, or less if the header cannot say more.
    fn write_limit(&self) -> usize {
        self.max_frame.min(self.framing.capacity())
    }

    /// Appends one frame whose body `f` writes into `dst` after a header placeholder; see
    /// [`encode_frame_with`].
    pub fn encode_with<E>(
        &self,
        dst: &mut BytesMut,
        f: impl FnOnce(&mut BytesMut) -> Result<(), E>,
    ) -> Result<(), FrameError>
    where
        E: Into<FrameError>,
    {
        encode_frame_with(dst, self.framing, self.max_frame, f)
    }

    /// Reads a header when one is complete; checks it against the maximum before reserving.
    fn decode_head(&self, src: &mut BytesMut) -> Result<Option<usize>, FrameError> {
        let head = self.framing.header_len();
        let Some(header) = src.get(..head) else {
            return Ok(None);
        };
        let n = self.framing.read_header(header)?;
        if n > self.max_frame {
            return Err(FrameError::TooLarge {
                declared: n,
                max: self.max_frame,
            });
        }
        let _ = src.split_to(head);
        // Safe to reserve now: n is at most max_frame.
        src.reserve(n.saturating_sub(src.len()));
        Ok(Some(n))
    }

    fn put_frame(&self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        let limit = self.write_limit();
        if body.len() > limit {
            return Err(FrameError::TooLarge {
                declared: body.len(),
                max: limit,
            });
        }
        let head = self.framing.header_len();
        dst.reserve(head + body.len());
        let start = dst.len();
        dst.put_bytes(0, head);
        if let Some(h) = dst.get_mut(start..start + head) {
            self.framing.write_header(body.len(), h)?;
        }
        dst.put_slice(body);
        Ok(())
    }
}

impl Decoder for LengthFramer {
    type Item = Bytes;
    type Error = FrameError;

    /// One frame's body (header removed), `Ok(None)` until it is complete. On error `src` still
    /// holds the offending header.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let n = match self.state {
            DecodeState::Head => match self.decode_head(src)? {
                Some(n) => {
                    self.state = DecodeState::Data(n);
                    n
                }
                None => return Ok(None),
            },
            DecodeState::Data(n) => n,
        };
        if src.len() < n {
            return Ok(None);
        }
        self.state = DecodeState::Head;
        let frame = src.split_to(n).freeze();
        src.reserve(self.framing.header_len().saturating_sub(src.len()));
        Ok(Some(frame))
    }

    /// As [`Decoder::decode`]; bytes left over when the stream ends are
    /// [`FrameError::Truncated`].
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.state == DecodeState::Head => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Bytes> for LengthFramer {
    type Error = FrameError;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.put_frame(&body, dst)
    }
}

impl Encoder<&[u8]> for LengthFramer {
    type Error = FrameError;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        self.put_frame(body, dst)
    }
}

/// Encodes the message straight into the output buffer behind its header (no copy).
impl Encoder<&MessageBuilder<'_, '_>> for LengthFramer {
    type Error = FrameError;

    fn encode(
        &mut self,
        msg: &MessageBuilder<'_, '_>,
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        self.encode_with(dst, |body| msg.encode_into(body))
    }
}

/// Appends one frame to `dst`: a header placeholder, then whatever `f` writes (typically
/// [`MessageBuilder::encode_into`]), then the header is patched with the body's length
/// (postgres-protocol's `write_body` pattern). Many frames can be appended to one buffer
/// this way and written with one system call.
///
/// Fails with [`FrameError::TooLarge`] when the body exceeds `max` or what the header can
/// express (9999 for `ascii4` and `bcd2`), or with `f`'s error; on any error `dst` is left as
/// it was.
///
/// ```
/// use bytes::BytesMut;
/// use codec::framing::{encode_frame_with, FrameError, Framing};
///
/// let mut out = BytesMut::new();
/// encode_frame_with(&mut out, Framing::Bcd2, 8192, |body| {
///     body.extend_from_slice(b"0800...");
///     Ok::<(), FrameError>(())
/// })
/// .unwrap();
/// assert_eq!(&out[..2], &[0x00, 0x07]);
/// ```
pub fn encode_frame_with<E>(
    dst: &mut BytesMut,
    framing: Framing,
    max: usize,
    f: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), FrameError>
where
    E: Into<FrameError>,
{
    let start = dst.len();
    let head = framing.header_len();
    dst.put_bytes(0, head);
    let result = f(dst).map_err(Into::into).and_then(|()| {
        let body_start = start + head;
        let Some(len) = dst.len().checked_sub(body_start) else {
            return Err(FrameError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame body writer removed the length header",
            )));
        };
        let limit = max.min(framing.capacity());
        if len > limit {
            return Err(FrameError::TooLarge {
                declared: len,
                max: limit,
            });
        }
        match dst.get_mut(start..body_start) {
            Some(h) => framing.write_header(len, h),
            None => Err(FrameError::BadHeader),
        }
    });
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Framing::ALL {
            assert_eq!(f.to_string().parse::<Framing>().unwrap(), f);
        }
        assert_eq!(Framing::default(), Framing::Len2);
        assert!("LEN2".parse::<Framing>().is_err());
        assert!("len3".parse::<Framing>().is_err());
    }

    #[test]
    fn headers_write_and_read_back() {
        for f in Framing::ALL {
            for len in [0, 1, 9, 10, 99, 255, 256, 1234, 8192, 9999] {
                let mut h = vec![0u8; f.header_len()];
                f.write_header(len, &mut h).unwrap();
                assert_eq!(f.read_header(&h).unwrap(), len, "{f} {len}");
            }
        }
        let mut h = [0u8; 4];
        Framing::Ascii4.write_header(42, &mut h).unwrap();
        assert_eq!(&h, b"0042");
        let mut h = [0u8; 2];
        Framing::Bcd2.write_header(1234, &mut h).unwrap();
        assert_eq!(h, [0x12, 0x34]);
        Framing::Len2.write_header(0x1234, &mut h).unwrap();
        assert_eq!(h, [0x12, 0x34]);
    }

    #[test]
    fn capacity_is_enforced_when_writing() {
        let mut h = [0u8; 4];
        assert!(matches!(
            Framing::Ascii4.write_header(10_000, &mut h),
            Err(FrameError::TooLarge {
                declared: 10_000,
                max: 9999
            })
        ));
        let mut h = [0u8; 2];
        assert!(Framing::Len2.write_header(65_536, &mut h).is_err());
        assert!(Framing::Len2.write_header(65_535, &mut h).is_ok());
    }
}
