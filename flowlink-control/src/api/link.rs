//! `GET /api/v1/link`: the WebSocket an enrolled proxy keeps open. The route is public in the
//! table because the device authenticates inside the protocol (a signed challenge, see
//! `crate::link::session`), not with a session or an API token.

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::{Access, ApiError, ApiRoute, AppState, ClientInfo};
use crate::link::session::{self, MAX_FRAME_BYTES};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute::new(
        Method::GET,
        "/api/v1/link",
        Access::Public,
        link,
    )]
}

/// The read buffer of one link's WebSocket.
const LINK_READ_BUFFER: usize = 8 * 1024;

#[utoipa::path(get, path = "/api/v1/link", tag = "devices",
    description = "Upgrades to the link WebSocket of an enrolled proxy (JSON text frames, `flowlink_proto::link`, version 1): hello, a challenge the device signs with its enrolment key, then policy pushes, heartbeats, audit batches and approvals.",
    responses((status = 101, description = "Switching to the link protocol"),
              (status = 400, description = "Not a WebSocket upgrade request", body = super::error::ErrorBody),
              (status = 426, description = "The connection cannot be upgraded", body = super::error::ErrorBody)))]
async fn link(
    State(state): State<AppState>,
    client: ClientInfo,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::new(
                e.status(),
                "websocket_required",
                format!(
                    "this is the proxies' WebSocket link ({}); connect with a WebSocket client",
                    e.body_text()
                ),
            )
            .into_response();
        }
    };
    upgrade
        // Twice the limit, so a frame just over it is read and refused in words; far larger
        // ones end the connection.
        .max_message_size(2 * MAX_FRAME_BYTES)
        .max_frame_size(2 * MAX_FRAME_BYTES)
        // tungstenite allocates its read buffer up front (128 KiB by default) and it became
        // resident: ~123 KiB per idle link. 8 KiB is plenty for heartbeats; an audit batch
        // grows the buffer to its frame's length anyway (`benches/link_load.rs`).
        .read_buffer_size(LINK_READ_BUFFER)
        .on_upgrade(move |socket| session::run(state, socket, client))
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(link))]
pub struct Doc;
