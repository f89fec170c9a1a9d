//! Framing of the runner protocol: a 4-byte big-endian length, then that many bytes of JSON.
//!
//! This module owns only the byte layout of one [`Frame`] on a stream. It never interprets
//! requests or replies, and never reads past the frame it was asked for, so a stream can carry
//! many frames back to back. Both directions refuse frames over [`MAX_FRAME_BYTES`] before
//! allocating for them: a peer cannot make the other side buffer an arbitrary amount.

use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{Frame, MAX_FRAME_BYTES};

/// Length of the big-endian size prefix.
const HEADER_BYTES: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed, or ended in the middle of a frame.
    #[error("frame stream failed")]
    Io(#[source] io::Error),
    /// The frame is larger than the protocol allows.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced or encoded length.
        len: usize,
        /// [`MAX_FRAME_BYTES`].
        max: usize,
    },
    /// The payload is not valid JSON of the expected type.
    #[error("frame payload is not a valid message: {0}")]
    Decode(#[source] serde_json::Error),
    /// The message could not be serialised.
    #[error("message could not be encoded: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Encodes a frame (header and payload) into one buffer, so it goes out in a single write.
pub fn encode_frame<T: Serialize>(frame: &Frame<T>) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(&[0; HEADER_BYTES]);
    serde_json::to_writer(&mut buf, frame).map_err(FrameError::Encode)?;
    let len = buf.len() - HEADER_BYTES;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    // MAX_FRAME_BYTES < u32::MAX, so the checked length always fits the header.
    let header = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: MAX_FRAME_BYTES,
    })?;
    buf[..HEADER_BYTES].copy_from_slice(&header.to_be_bytes());
    Ok(buf)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W, T>(writer: &mut W, frame: &Frame<T>) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode_frame(frame)?;
    writer.write_all(&buf).await.map_err(FrameError::Io)?;
    writer.flush().await.map_err(FrameError::Io)
}

/// Reads one frame. A stream that ends cleanly between frames yields `Ok(None)`; one that ends
/// inside a frame is an [`FrameError::Io`] with [`io::ErrorKind::UnexpectedEof`].
pub async fn read_frame<R, T>(reader: &mut R) -> Result<Option<Frame<T>>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    match read_payload(reader).await? {
        Some(payload) => serde_json::from_slice(&payload)
            .map(Some)
            .map_err(FrameError::Decode),
        None => Ok(None),
    }
}

/// Reads one frame's JSON payload without decoding it (`Ok(None)` on a clean end), for a
/// reader that wants to look at a payload it could not decode.
pub async fn read_payload<R>(reader: &mut R) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; HEADER_BYTES];
    let mut filled = 0;
    while filled < HEADER_BYTES {
        let n = reader
            .read(&mut header[filled..])
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(FrameError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a frame header",
            )));
        }
        filled += n;
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(FrameError::Io)?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::protocol::{Reply, Request};

    #[tokio::test]
    async fn frames_round_trip_back_to_back_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let first = Frame {
            id: 7,
            body: Request::Hello { version: 1 },
        };
        let second = Frame {
            id: 8,
            body: Request::Stat {
                path: "src/main.rs".into(),
            },
        };
        write_frame(&mut a, &first).await.unwrap();
        write_frame(&mut a, &second).await.unwrap();
        drop(a);
        let got: Frame<Request> = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got.id, 7);
        assert!(matches!(got.body, Request::Hello { version: 1 }));
        let got: Frame<Request> = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(got.id, 8);
        assert!(matches!(got.body, Request::Stat { ref path } if path == "src/main.rs"));
        let end: Option<Frame<Request>> = read_frame(&mut b).await.unwrap();
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_refused_before_reading_it() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let len = (MAX_FRAME_BYTES as u32) + 1;
        a.write_all(&len.to_be_bytes()).await.unwrap();
        let err = read_frame::<_, Reply>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("exceeds"));
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_an_error_not_a_clean_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        let err = read_frame::<_, Reply>(&mut b).await.unwrap_err();
        assert!(
            matches!(err, FrameError::Io(ref e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err:?}"
        );

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{\"id\"").await.unwrap();
        drop(a);
        let err = read_frame::<_, Reply>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Io(_)), "{err:?}");
    }

    #[test]
    fn an_oversized_message_is_refused_when_encoding() {
        let frame = Frame {
            id: 1,
            body: Request::WriteFile {
                path: "big".into(),
                content: crate::runner::protocol::Bytes(vec![0; MAX_FRAME_BYTES]),
                create_parents: false,
                create_new: false,
                snapshot: false,
            },
        };
        assert!(matches!(
            encode_frame(&frame),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn garbage_json_is_a_decode_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{{{").await.unwrap();
        let err = read_frame::<_, Reply>(&mut b).await.unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    }
}
