//! What every page shares: the frame around it ([`Chrome`], `templates/base.html`), rendering,
//! and the static files served from the binary with a content-hash version and long caching.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::api::{ApiError, ApiResult, AppState, Caller};
use crate::auth::secret::sha256_hex;

/// A static file: name under `/ui/static/`, content type, bytes.
pub struct StaticFile {
    /// File name (the URL's last segment).
    pub name: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The content, compiled in.
    pub bytes: &'static [u8],
}

/// Every static file the pages use. Add a script here (`static/<name>.js`) and reference it
/// from a template with `{{ chrome.asset("<name>.js") }}`.
pub const STATIC_FILES: &[StaticFile] = &[
    StaticFile {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/app.css"),
    },
    StaticFile {
        name: "approvals.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/approvals.css"),
    },
    StaticFile {
        name: "approvals.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/approvals.js"),
    },
    StaticFile {
        name: "audit.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/audit.css"),
    },
    StaticFile {
        name: "audit.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/audit.js"),
    },
    StaticFile {
        name: "agents.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/agents.css"),
    },
    StaticFile {
        name: "policies.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/policies.css"),
    },
    StaticFile {
        name: "policies.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/policies.js"),
    },
    StaticFile {
        name: "secrets.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/secrets.css"),
    },
    StaticFile {
        name: "secrets.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/secrets.js"),
    },
    StaticFile {
        name: "org.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/org.css"),
    },
];

/// Each static file's version: the first 16 hex digits of its SHA-256.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    STATIC_FILES
        .iter()
        .map(|f| sha256_hex(&String::from_utf8_lossy(f.bytes))[..16].to_string())
        .collect()
});

/// `GET /ui/static/{file}`: cached for a year (the URL changes with the content).
pub async fn static_file(Path(name): Path<String>) -> Response {
    let Some(file) = STATIC_FILES.iter().find(|f| f.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut response = file.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

/// The frame of a page: title, links, the signed-in person and the CSRF token for forms.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// The page's title.
    pub title: String,
    /// The public URL's path: the prefix of every link.
    pub base: String,
    /// The session's CSRF token (empty when nobody is signed in).
    pub csrf: String,
    /// The signed-in person's name, when fully signed in.
    pub user: Option<String>,
}

impl Chrome {
    /// The frame for a signed-in caller.
    pub fn new(state: &AppState, caller: &Caller, title: &str) -> Chrome {
        let complete = caller.session().is_some_and(|s| s.stage == "complete");
        Chrome {
            title: title.to_string(),
            base: super::base_path(state),
            csrf: caller
                .session()
                .map(|s| s.csrf_token.clone())
                .unwrap_or_default(),
            user: complete.then(|| caller.user.display_name.clone()),
        }
    }

    /// The frame for a page nobody is signed in to.
    pub fn anonymous(state: &AppState, title: &str) -> Chrome {
        Chrome {
            title: title.to_string(),
            base: super::base_path(state),
            csrf: String::new(),
            user: None,
        }
    }

    /// The versioned URL of static file `name`.
    pub fn asset(&self, name: &str) -> String {
        let version = STATIC_FILES
            .iter()
            .position(|f| f.name == name)
            .map(|i| VERSIONS[i].as_str())
            .unwrap_or("missing");
        format!("{}/ui/static/{name}?v={version}", self.base)
    }
}

/// Renders a page as a 200.
pub fn render<T: askama::Template>(page: &T) -> ApiResult<Response> {
    render_status(StatusCode::OK, page)
}

/// Renders a page with `status` (a form shown again with its errors is a 400 or 401).
pub fn render_status<T: askama::Template>(status: StatusCode, page: &T) -> ApiResult<Response> {
    let html = page
        .render()
        .map_err(|e| ApiError::internal("rendering a page", e))?;
    Ok((status, Html(html)).into_response())
}

/// An RFC 3339 time as people read it: `2026-11-26 04:29 UTC` (the text as given when it is not
/// RFC 3339 in UTC).
pub fn when(rfc3339: &str) -> String {
    match (rfc3339.get(..10), rfc3339.get(11..16)) {
        (Some(date), Some(time)) if rfc3339.ends_with('Z') => format!("{date} {time} UTC"),
        _ => rfc3339.to_string(),
    }
}
