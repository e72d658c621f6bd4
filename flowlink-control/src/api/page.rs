//! Pagination, the same everywhere: `?limit=N&cursor=C` in, `{"items": [...], "next_cursor": C}`
//! out. Cursors are opaque (base64 of a keyset position) and `next_cursor` is absent on the last
//! page, so clients loop until it is missing. Keyset, not offset: a page costs the same at row
//! ten million as at row ten.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 500;

/// `?limit=&cursor=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<u32>,
}

impl PageQuery {
    /// The page size, checked.
    pub fn limit(&self) -> Result<u32, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if (1..=MAX_LIMIT).contains(&limit) {
            Ok(limit)
        } else {
            Err(ApiError::bad_request(format!(
                "`limit` must be 1..={MAX_LIMIT}"
            )))
        }
    }

    /// The decoded cursor, if any.
    pub fn key(&self) -> Result<Option<String>, ApiError> {
        self.cursor.as_deref().map(decode_key).transpose()
    }
}

/// Encodes a keyset position.
pub fn encode_key(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// Decodes a keyset position.
pub fn decode_key(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("`cursor` is not one this server returned");
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    String::from_utf8(raw).map_err(|_| bad())
}

/// Splits a fetched `limit + 1` rows into the page and the next cursor.
pub fn finish<T>(
    mut rows: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = limit as usize;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|r| encode_key(&key(r)))
    } else {
        None
    };
    (rows, next)
}
