//! Stage 1, frame: split a byte stream into lines with a size bound.
//!
//! A line longer than the bound is never buffered whole: the reader keeps its first bytes (enough
//! to find the request id) and skips the rest up to the next newline, so a hostile or broken peer
//! cannot make the proxy allocate without limit.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// How much of an oversized line is kept for diagnostics and id recovery.
const OVERSIZED_HEAD: usize = 512;

/// One unit read from a peer.
#[derive(Debug)]
pub enum Line {
    /// A complete line, without its newline.
    Data(Vec<u8>),
    /// A line over the limit: its total length and its first bytes.
    TooLong {
        /// Length of the whole line.
        len: usize,
        /// The first [`OVERSIZED_HEAD`] bytes.
        head: Vec<u8>,
    },
}

/// Reads newline-delimited frames with a size limit.
pub struct LineReader<R> {
    inner: R,
    limit: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    /// Wraps a buffered reader; lines longer than `limit` bytes are reported as [`Line::TooLong`].
    pub fn new(inner: R, limit: usize) -> Self {
        LineReader { inner, limit }
    }

    /// The next line, `Ok(None)` at end of stream. A final line without a newline still counts.
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let mut oversized: Option<(usize, Vec<u8>)> = None;
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                // End of stream.
                return Ok(match oversized {
                    Some((len, head)) => Some(Line::TooLong { len, head }),
                    None if buf.is_empty() => None,
                    None => Some(Line::Data(buf)),
                });
            }
            let (chunk, found) = match memchr_newline(available) {
                Some(i) => (&available[..i], Some(i)),
                None => (available, None),
            };
            match &mut oversized {
                Some((len, _)) => *len += chunk.len(),
                None if buf.len() + chunk.len() > self.limit => {
                    let mut head = std::mem::take(&mut buf);
                    head.extend_from_slice(chunk);
                    let len = head.len();
                    head.truncate(OVERSIZED_HEAD);
                    oversized = Some((len, head));
                }
                None => buf.extend_from_slice(chunk),
            }
            let consumed = found.map_or(chunk.len(), |i| i + 1);
            self.inner.consume(consumed);
            if found.is_some() {
                return Ok(Some(match oversized {
                    Some((len, head)) => Line::TooLong { len, head },
                    None => Line::Data(buf),
                }));
            }
        }
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Finds a numeric or string `"id"` member near the start of an oversized line, so the request it
/// belongs to can still be answered. Best effort: `None` when the head does not show one.
pub fn sniff_id(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let at = text.find("\"id\"")?;
    let rest = text[at + 4..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        let end = s.find('"')?;
        let inner = &s[..end];
        if inner.contains('\\') {
            return None;
        }
        Some(format!("\"{inner}\""))
    } else {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .unwrap_or(rest.len());
        let n = &rest[..end];
        (!n.is_empty() && n.parse::<i64>().is_ok()).then(|| n.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], limit: usize) -> Vec<Line> {
        let mut r = LineReader::new(tokio::io::BufReader::with_capacity(8, input), limit);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().await.unwrap() {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_across_buffer_boundaries() {
        let got = lines(b"{\"a\":1}\n{\"bb\":22}\nlast", 100).await;
        let data: Vec<_> = got
            .into_iter()
            .map(|l| match l {
                Line::Data(d) => d,
                Line::TooLong { .. } => panic!("not too long"),
            })
            .collect();
        assert_eq!(
            data,
            vec![
                b"{\"a\":1}".to_vec(),
                b"{\"bb\":22}".to_vec(),
                b"last".to_vec()
            ]
        );
    }

    #[tokio::test]
    async fn oversized_lines_are_skipped_not_buffered() {
        let mut input = b"{\"id\":17,\"method\":\"x\",\"params\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'a', 5000));
        input.extend_from_slice(b"\"}\n{\"ok\":1}\n");
        let got = lines(&input, 1000).await;
        assert_eq!(got.len(), 2);
        match &got[0] {
            Line::TooLong { len, head } => {
                assert_eq!(*len, input.len() - 10);
                assert!(head.len() <= OVERSIZED_HEAD);
                assert_eq!(sniff_id(head).as_deref(), Some("17"));
            }
            Line::Data(_) => panic!("should be too long"),
        }
        assert!(matches!(&got[1], Line::Data(d) if d == b"{\"ok\":1}"));
    }

    #[test]
    fn sniffs_ids() {
        assert_eq!(
            sniff_id(br#"{"jsonrpc":"2.0","id": "ab-1","method""#).as_deref(),
            Some("\"ab-1\"")
        );
        assert_eq!(sniff_id(br#"{"method":"x"}"#), None);
    }
}
