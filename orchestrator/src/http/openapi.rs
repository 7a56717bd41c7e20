//! The API contract as OpenAPI 3.1, generated from the handlers and types
//! themselves (so it cannot drift from them), served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, checkouts, stats};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Checkout saga",
        description = "Checkouts driven as sagas over inventory, tax and payment; \
                       support tools for the ones that fail. Money is integer minor units (cents).",
    ),
    paths(
        checkouts::create,
        checkouts::get,
        admin::list,
        admin::detail,
        admin::retry,
        admin::cancel,
        admin::bulk_retry,
        admin::failures,
        admin::dead_letters,
        admin::outbox,
        stats::statuses,
        stats::minutes,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "checkouts", description = "For checkout clients"),
        (name = "support", description = "For support staff: a bearer token from ADMIN_TOKENS"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
