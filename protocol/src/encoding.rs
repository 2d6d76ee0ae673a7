//! How a result chunk's body is compressed: the `contentEncoding` of the upload grant
//! (docs/PROTOCOL.md §7).
//!
//! The agent offers what it can write in `auth.chunkEncodings`, best first; the gateway picks
//! the first of its own preferred encodings that the agent offered ([`ContentEncoding::pick`])
//! and names it in `connected.upload.contentEncoding`;
//! every chunk of that session is compressed so and says it in its `content-encoding` header.
//! [`ContentEncoding::Deflate`] (a zlib stream, RFC 1950) is what every peer reads and writes:
//! an old gateway names nothing and gets it, an old agent offers nothing and sends it.
//!
//! [`ContentEncoding::Lz4`] is the LZ4 frame format with independent blocks of at most 64 KiB
//! (what `lz4 -B4` writes). Its decoder ([`ContentEncoding::decoder`]) refuses any other block
//! size and linked blocks: like the zlib decoder, it never holds more than one 64 KiB block of
//! output, whatever the compression ratio, so a receiver that counts what it reads in steps
//! against its caps refuses a bomb without allocating it. (`lz4_flex`'s own `FrameDecoder`
//! allocates what the frame header declares, up to 2 × 8 MiB, and reads concatenated frames,
//! so the frame walk is done here and only the block codec is the crate's.)

use std::io::{self, Read, Write as _};

/// A chunk body's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    /// A zlib stream (RFC 1950), HTTP `content-encoding: deflate`. Every peer has it.
    Deflate,
    /// The LZ4 frame format, independent blocks of at most 64 KiB.
    Lz4,
}

/// Largest uncompressed block of an [`ContentEncoding::Lz4`] frame.
pub const LZ4_BLOCK_BYTES: usize = 64 * 1024;

const LZ4_MAGIC: u32 = 0x184D_2204;

impl ContentEncoding {
    /// What this build can write and read, best first (the agent's offer).
    pub const SUPPORTED: [ContentEncoding; 2] = [ContentEncoding::Lz4, ContentEncoding::Deflate];

    /// The wire name: `deflate`, `lz4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deflate => "deflate",
            Self::Lz4 => "lz4",
        }
    }

    /// What the data is, for messages: `zlib`, `LZ4 frame`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Deflate => "zlib",
            Self::Lz4 => "LZ4 frame",
        }
    }

    /// The encoding a wire name means (trimmed, case-insensitive); `None` for one this build
    /// does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::SUPPORTED.into_iter().find(|e| e.as_str().eq_ignore_ascii_case(name))
    }

    /// The names of [`Self::SUPPORTED`], for `auth.chunkEncodings`.
    pub fn offer() -> Vec<String> {
        Self::SUPPORTED.iter().map(|e| e.as_str().to_owned()).collect()
    }

    /// The gateway's choice for `connected.upload.contentEncoding`: the first of its own
    /// `preferred` encodings that the agent `offered`. `None` when the agent offered nothing
    /// (an old agent) or nothing preferred: the grant then names none and the agent sends
    /// `deflate`.
    pub fn pick(offered: &[String], preferred: &[Self]) -> Option<Self> {
        let offered: Vec<Self> = offered.iter().filter_map(|name| Self::from_name(name)).collect();
        preferred.iter().copied().find(|e| offered.contains(e))
    }

    /// Compresses one chunk.
    pub fn encode(self, plain: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Self::Deflate => {
                let mut encoder = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(plain.len() / 4),
                    flate2::Compression::fast(),
                );
                encoder.write_all(plain)?;
                encoder.finish()
            }
            Self::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Independent);
                let mut encoder =
                    lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(plain.len() / 3));
                encoder.write_all(plain)?;
                encoder.finish().map_err(io::Error::other)
            }
        }
    }

    /// A reader of the uncompressed bytes of `body`. It holds at most 64 KiB of output at a
    /// time; broken data is an [`io::ErrorKind::InvalidData`] error when it is reached (an LZ4
    /// frame header this decoder does not take fails here already).
    pub fn decoder(self, body: &[u8]) -> io::Result<Decoder<'_>> {
        Ok(match self {
            Self::Deflate => Decoder(Inner::Deflate(Box::new(flate2::read::ZlibDecoder::new(body)))),
            Self::Lz4 => Decoder(Inner::Lz4(Lz4Frame::new(body)?)),
        })
    }
}

impl std::fmt::Display for ContentEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The uncompressed bytes of one chunk body ([`ContentEncoding::decoder`]).
pub struct Decoder<'a>(Inner<'a>);

enum Inner<'a> {
    Deflate(Box<flate2::read::ZlibDecoder<&'a [u8]>>),
    Lz4(Lz4Frame<'a>),
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let encoding = match self.0 {
            Inner::Deflate(_) => ContentEncoding::Deflate,
            Inner::Lz4(_) => ContentEncoding::Lz4,
        };
        f.debug_tuple("Decoder").field(&encoding).finish()
    }
}

impl Read for Decoder<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Deflate(d) => d.read(out),
            Inner::Lz4(d) => d.read(out),
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// One LZ4 frame (independent blocks ≤ 64 KiB), walked block by block.
struct Lz4Frame<'a> {
    /// Input not consumed yet.
    rest: &'a [u8],
    block_checksums: bool,
    content_checksum: bool,
    /// The current block's output and how much of it was read.
    block: Vec<u8>,
    len: usize,
    pos: usize,
    done: bool,
}

impl<'a> Lz4Frame<'a> {
    fn new(body: &'a [u8]) -> io::Result<Self> {
        if body.len() < 7 || u32::from_le_bytes([body[0], body[1], body[2], body[3]]) != LZ4_MAGIC {
            return Err(invalid("not an LZ4 frame (bad magic number)"));
        }
        let (flg, bd) = (body[4], body[5]);
        if flg >> 6 != 0b01 {
            return Err(invalid("unsupported LZ4 frame version"));
        }
        if flg & 0b10_0000 == 0 {
            return Err(invalid("linked LZ4 blocks are not accepted (independent blocks only)"));
        }
        if flg & 0b11 != 0 || bd & 0b1000_1111 != 0 {
            return Err(invalid("LZ4 frame with reserved bits or a dictionary id"));
        }
        if (bd >> 4) & 0b111 != 4 {
            return Err(invalid("LZ4 frame blocks must be at most 64 KiB (block maximum size 4)"));
        }
        // FLG, BD, the optional content size, the header checksum byte.
        let header = 4 + 2 + if flg & 0b1000 != 0 { 8 } else { 0 } + 1;
        if body.len() < header {
            return Err(invalid("truncated LZ4 frame header"));
        }
        Ok(Self {
            rest: &body[header..],
            block_checksums: flg & 0b1_0000 != 0,
            content_checksum: flg & 0b100 != 0,
            block: Vec::new(),
            len: 0,
            pos: 0,
            done: false,
        })
    }

    fn take(&mut self, n: usize, what: &str) -> io::Result<&'a [u8]> {
        if self.rest.len() < n {
            return Err(invalid(format!("truncated LZ4 frame ({what})")));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// Decodes the next block into `self.block`; `false` at the end mark.
    fn next_block(&mut self) -> io::Result<bool> {
        let size = self.take(4, "block size")?;
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        if size == 0 {
            if self.content_checksum {
                self.take(4, "content checksum")?;
            }
            if !self.rest.is_empty() {
                return Err(invalid("bytes after the end of the LZ4 frame"));
            }
            return Ok(false);
        }
        let stored = size & 0x8000_0000 != 0;
        let n = (size & 0x7FFF_FFFF) as usize;
        if n > LZ4_BLOCK_BYTES {
            return Err(invalid("LZ4 block larger than 64 KiB"));
        }
        let data = self.take(n, "block")?;
        self.block.resize(LZ4_BLOCK_BYTES, 0);
        self.len = if stored {
            self.block[..n].copy_from_slice(data);
            n
        } else {
            lz4_flex::block::decompress_into(data, &mut self.block)
                .map_err(|e| invalid(format!("broken LZ4 block: {e}")))?
        };
        self.pos = 0;
        if self.block_checksums {
            self.take(4, "block checksum")?;
        }
        Ok(true)
    }
}

impl Read for Lz4Frame<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            if !self.next_block()? {
                self.done = true;
                return Ok(0);
            }
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: usize) -> Vec<u8> {
        let mut text = String::from("{\"columns\":[{\"name\":\"id\",\"type\":\"integer\"}]}\n");
        for i in 0..rows {
            text.push_str(&format!("[{i},\"customer-{i:08}\",{},{}]\n", i as f64 * 0.25, i % 2 == 0));
        }
        text.into_bytes()
    }

    fn decode(encoding: ContentEncoding, body: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        encoding.decoder(body)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn every_encoding_round_trips_empty_small_and_multi_block_chunks() {
        for encoding in ContentEncoding::SUPPORTED {
            for plain in [Vec::new(), b"[1]\n".to_vec(), sample(20_000)] {
                let body = encoding.encode(&plain).unwrap();
                assert_eq!(decode(encoding, &body).unwrap(), plain, "{encoding}");
            }
        }
        let plain = sample(20_000);
        assert!(plain.len() > 4 * LZ4_BLOCK_BYTES);
        let lz4 = ContentEncoding::Lz4.encode(&plain).unwrap();
        assert!(lz4.len() < plain.len() / 2, "{} of {}", lz4.len(), plain.len());
    }

    #[test]
    fn names_and_the_gateways_pick() {
        assert_eq!(ContentEncoding::offer(), ["lz4", "deflate"]);
        assert_eq!(ContentEncoding::from_name(" LZ4 "), Some(ContentEncoding::Lz4));
        assert_eq!(ContentEncoding::from_name("zstd"), None);
        let pick = |names: &[&str], preferred: &[ContentEncoding]| {
            ContentEncoding::pick(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>(), preferred)
        };
        let all = ContentEncoding::SUPPORTED;
        assert_eq!(pick(&["zstd", "lz4", "deflate"], &all), Some(ContentEncoding::Lz4));
        assert_eq!(pick(&["deflate", "lz4"], &all), Some(ContentEncoding::Lz4), "the gateway's order");
        let slow_uplinks = [ContentEncoding::Deflate, ContentEncoding::Lz4];
        assert_eq!(pick(&["lz4", "deflate"], &slow_uplinks), Some(ContentEncoding::Deflate));
        assert_eq!(pick(&["lz4"], &[ContentEncoding::Deflate]), None, "deflate goes without saying");
        assert_eq!(pick(&[], &all), None, "an old agent offers nothing");
        assert_eq!(pick(&["lz4"], &[]), None, "an old gateway grants nothing");
        assert_eq!(pick(&["brotli"], &all), None);
    }

    #[test]
    fn a_bomb_is_read_a_step_at_a_time() {
        // 16 MiB of zeros compress to a few KiB; each read hands out at most the caller's step
        // (zlib) or one 64 KiB block (LZ4), whatever the caller's buffer.
        let plain = vec![0u8; 16 << 20];
        for encoding in ContentEncoding::SUPPORTED {
            let body = encoding.encode(&plain).unwrap();
            assert!(body.len() < 128 << 10, "{encoding}: {}", body.len());
            let mut decoder = encoding.decoder(&body).unwrap();
            let mut step = vec![0u8; 1 << 20];
            let n = decoder.read(&mut step).unwrap();
            let most = if encoding == ContentEncoding::Lz4 { LZ4_BLOCK_BYTES } else { step.len() };
            assert!(n > 0 && n <= most, "{encoding}: {n}");
        }
    }

    #[test]
    fn broken_or_foreign_lz4_frames_are_invalid_data() {
        let plain = sample(5_000);
        let good = ContentEncoding::Lz4.encode(&plain).unwrap();
        let err = |body: &[u8]| decode(ContentEncoding::Lz4, body).unwrap_err();
        assert_eq!(err(b"not lz4 at all").kind(), io::ErrorKind::InvalidData);
        assert!(err(&good[..good.len() - 7]).to_string().contains("truncated"));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&good);
        assert!(err(&trailing).to_string().contains("after the end"));
        // Corrupt a match offset deep inside the first block.
        let mut corrupt = good.clone();
        for b in &mut corrupt[20..60] {
            *b = 0xFF;
        }
        assert_eq!(err(&corrupt).kind(), io::ErrorKind::InvalidData);
        // 4 MiB blocks (what lz4_flex picks by itself for a large first write) are refused.
        let mut big = lz4_flex::frame::FrameEncoder::new(Vec::new());
        big.write_all(&plain).unwrap();
        let big = big.finish().unwrap();
        assert!(err(&big).to_string().contains("64 KiB"));
        assert!(decode(ContentEncoding::Deflate, b"not zlib").is_err());
    }

    #[test]
    fn frames_of_the_reference_lz4_tool_are_read_with_64_kib_blocks_only() {
        let plain = include_bytes!("../tests/fixtures/erp.ndjson");
        for frame in [
            &include_bytes!("../tests/fixtures/erp.b4.lz4")[..],
            &include_bytes!("../tests/fixtures/erp.b4-checksums-size.lz4")[..],
        ] {
            assert_eq!(decode(ContentEncoding::Lz4, frame).unwrap(), plain);
        }
        let refused = |frame: &[u8]| ContentEncoding::Lz4.decoder(frame).unwrap_err().to_string();
        assert!(refused(include_bytes!("../tests/fixtures/head.b6.lz4")).contains("64 KiB"));
        assert!(refused(include_bytes!("../tests/fixtures/head.b4-linked.lz4")).contains("linked"));
    }
}
