//! The OpenAPI document at `/api/v1/openapi.json`, merged from each module's `Doc` (generated
//! from the handlers' annotations). A test checks it lists exactly the route table.

use axum::http::Method;
use utoipa::OpenApi;

use super::{Access, ApiRoute};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute::new(
        Method::GET,
        "/api/v1/openapi.json",
        Access::Public,
        serve,
    )]
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FlowLink control plane API",
        version = "1",
        description = "Errors are `{\"error\": {\"code\", \"message\"}}`. Browser sessions send `X-CSRF-Token` on state-changing requests; automation uses `Authorization: Bearer flt_…` API tokens."
    ),
    paths(serve),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail))
)]
struct Root;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    doc.merge(super::auth::Doc::openapi());
    doc.merge(super::me::Doc::openapi());
    doc.merge(super::orgs::Doc::openapi());
    doc.merge(super::tokens::Doc::openapi());
    doc.merge(super::invitations::Doc::openapi());
    doc.merge(super::audit::Doc::openapi());
    doc.merge(super::approvals::Doc::openapi());
    doc.merge(super::policies::Doc::openapi());
    doc.merge(super::oauth::Doc::openapi());
    doc.merge(super::devices::Doc::openapi());
    doc.merge(super::link::Doc::openapi());
    doc.merge(super::secrets::Doc::openapi());
    add_error_responses(&mut doc);
    add_security(&mut doc);
    doc
}

/// Security schemes, and each operation's requirement and permission taken from the route
/// table, so the document says what the authorisation middleware enforces.
fn add_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An organisation's API token, `flt_…` (scoped; no CSRF header needed)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            super::extract::SESSION_COOKIE,
            "Browser session from sign-in; state-changing requests also send `X-CSRF-Token`",
        ))),
    );
    for route in super::api_routes() {
        let Some(item) = doc.paths.paths.get_mut(route.path) else {
            continue;
        };
        let op = match route.method.as_str() {
            "GET" => item.get.as_mut(),
            "POST" => item.post.as_mut(),
            "PUT" => item.put.as_mut(),
            "PATCH" => item.patch.as_mut(),
            "DELETE" => item.delete.as_mut(),
            _ => None,
        };
        let Some(op) = op else { continue };
        let session = || SecurityRequirement::new("session", Vec::<String>::new());
        let (security, note) = match route.access {
            Access::Public => (Vec::new(), "Public.".to_string()),
            Access::AnySession => (
                vec![session()],
                "A browser session at any sign-in stage.".to_string(),
            ),
            Access::SecondFactorDue => (
                vec![session()],
                "A browser session whose second factor is due.".to_string(),
            ),
            Access::Session => (vec![session()], "A signed-in browser session.".to_string()),
            Access::Org(p) => (
                vec![
                    session(),
                    SecurityRequirement::new("api_token", Vec::<String>::new()),
                ],
                format!(
                    "Requires the `{}` permission in the organisation.",
                    p.as_str()
                ),
            ),
        };
        op.security = Some(security);
        op.description = Some(match op.description.take() {
            Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
            _ => note,
        });
    }
}

/// Every operation can answer with the common error body (bad input, not signed in, not
/// allowed, rate limited, database unavailable…); document that once as each operation's
/// `default` response instead of repeating it in every annotation.
fn add_error_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = ResponseBuilder::new()
        .description("An error: `{\"error\": {\"code\", \"message\"}}`; `code` is stable, `message` says what to do")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .entry("default".to_string())
                .or_insert_with(|| RefOr::T(error.clone()));
        }
    }
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document (OpenAPI 3.1)")))]
async fn serve() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(document())
}
