//! Decoding compressed answers (feature `compression`): gzip, deflate,
//! br and zstd, as the chain asked for them, bounded by `max_body` after
//! decoding.

use std::io;

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::transport::{BoxError, ResponseBody};

/// The `Accept-Encoding` sent when decompression is on.
pub(crate) const ACCEPT: HeaderValue = HeaderValue::from_static("gzip, deflate, br, zstd");

#[derive(Clone, Copy, Debug)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn of(headers: &HeaderMap) -> Option<Coding> {
        let v = headers.get(CONTENT_ENCODING)?.to_str().ok()?.trim();
        Some(
            if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if v.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else if v.eq_ignore_ascii_case("br") {
                Coding::Brotli
            } else if v.eq_ignore_ascii_case("zstd") {
                Coding::Zstd
            } else {
                return None;
            },
        )
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// Why a body did not decompress.
#[derive(Debug)]
struct DecodeError {
    coding: &'static str,
    source: io::Error,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} body does not decompress: {}",
            self.coding, self.source
        )
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `body`, decoded if its `Content-Encoding` is one the chain asked for;
/// the encoding headers go.
pub(crate) fn decode(headers: &mut HeaderMap, body: ResponseBody) -> ResponseBody {
    let Some(coding) = Coding::of(headers) else {
        return body;
    };
    headers.remove(CONTENT_ENCODING);
    headers.remove(CONTENT_LENGTH);
    let raw = StreamReader::new(
        body.into_data_stream()
            .map_err(|e: BoxError| io::Error::other(e)),
    );
    let reader: Box<dyn AsyncRead + Send + Unpin> = match coding {
        Coding::Gzip => Box::new(GzipDecoder::new(raw)),
        Coding::Deflate => Box::new(ZlibDecoder::new(raw)),
        Coding::Brotli => Box::new(BrotliDecoder::new(raw)),
        Coding::Zstd => Box::new(ZstdDecoder::new(raw)),
    };
    let name = coding.name();
    let frames = ReaderStream::new(reader).map(move |chunk: io::Result<Bytes>| {
        chunk.map(Frame::data).map_err(|source| {
            Box::new(DecodeError {
                coding: name,
                source,
            }) as BoxError
        })
    });
    ResponseBody::new(StreamBody::new(frames))
}
