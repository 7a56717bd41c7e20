//! The support API for checkout clients: create one (its key shown once),
//! list them, change their limits, revoke one. Support tokens only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::json_body::JsonBody;
use crate::clients::{digest, generate_key, valid_name, ClientLimits, LimitOverrides, NAME_RULE};
use crate::http::auth::Actor;
use crate::http::problem::{ApiError, FieldError};
use crate::http::AppState;
use crate::store::clients::ClientRow;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientView {
    pub name: String,
    /// The limits in force: the client's own, else the defaults.
    pub limits: ClientLimits,
    /// The limits set for this client alone (the others follow the defaults).
    pub overrides: LimitOverrides,
    pub in_flight: i64,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ClientView {
    fn of(row: &ClientRow, defaults: &ClientLimits) -> Self {
        ClientView {
            name: row.name.clone(),
            limits: row.limits(defaults),
            overrides: row.overrides(),
            in_flight: row.in_flight,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientList {
    clients: Vec<ClientView>,
    /// What a client without limits of its own gets.
    defaults: ClientLimits,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NewClient {
    client: ClientView,
    /// The key, shown this once: only its digest is kept.
    key: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    /// 1 to 64 of A-Z a-z 0-9 . _ -
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    name: String,
    #[schema(exclusive_minimum = 0.0)]
    rate_per_second: Option<f64>,
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(default, deserialize_with = "crate::clients::limits::whole_count")]
    rate_burst: Option<u32>,
    #[schema(minimum = 1, maximum = 2147483647)]
    #[serde(default, deserialize_with = "crate::clients::limits::whole_count")]
    max_in_flight: Option<u32>,
}

impl NewClientBody {
    fn limits(&self) -> LimitOverrides {
        LimitOverrides {
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst,
            max_in_flight: self.max_in_flight,
        }
    }
}

fn check(limits: &LimitOverrides) -> Result<(), ApiError> {
    limits
        .check()
        .map_err(|(field, message)| ApiError::Invalid(vec![FieldError::new(field, message)]))
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no client named `{name}`"))
}

#[utoipa::path(
    get, path = "/v1/admin/clients", tag = "clients", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every client, revoked ones too, by name", body = ClientList),
    )
)]
pub async fn list(_: Actor, State(state): State<AppState>) -> Result<Json<ClientList>, ApiError> {
    let defaults = *state.clients.defaults();
    let rows = state.store.client_table().list().await?;
    Ok(Json(ClientList {
        clients: rows.iter().map(|r| ClientView::of(r, &defaults)).collect(),
        defaults,
    }))
}

#[utoipa::path(
    post, path = "/v1/admin/clients", tag = "clients", security(("bearer" = [])),
    request_body = NewClientBody,
    responses(
        (status = 201, description = "Created: the key is in this answer and nowhere else", body = NewClient),
        (status = 409, description = "The name is taken (by a revoked client too)", body = crate::http::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is invalid", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn add(
    Actor(actor): Actor,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewClientBody>,
) -> Result<(StatusCode, Json<NewClient>), ApiError> {
    if !valid_name(&body.name) {
        return Err(ApiError::Invalid(vec![FieldError::new(
            "name",
            format!("must be {NAME_RULE}"),
        )]));
    }
    let limits = body.limits();
    check(&limits)?;
    let key = generate_key();
    let row = state
        .store
        .client_table()
        .add(&body.name, &digest(&key), &limits)
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("a client named `{}` exists", body.name)))?;
    tracing::info!(client = %row.name, %actor, "checkout client created");
    refresh(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(NewClient {
            client: ClientView::of(&row, state.clients.defaults()),
            key,
        }),
    ))
}

#[utoipa::path(
    patch, path = "/v1/admin/clients/{name}", tag = "clients", security(("bearer" = [])),
    params(("name" = String, Path, description = "The client's name")),
    request_body = LimitOverrides,
    responses(
        (status = 200, description = "The limits given are set; the others are as they were", body = ClientView),
        (status = 422, description = "A limit is out of range", body = crate::http::problem::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn set_limits(
    Actor(actor): Actor,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(limits): JsonBody<LimitOverrides>,
) -> Result<Json<ClientView>, ApiError> {
    check(&limits)?;
    let row = state
        .store
        .client_table()
        .set_limits(&name, &limits)
        .await?
        .ok_or_else(|| not_found(&name))?;
    tracing::info!(client = %row.name, %actor, ?limits, "checkout client limits set");
    refresh(&state).await;
    Ok(Json(ClientView::of(&row, state.clients.defaults())))
}

#[utoipa::path(
    post, path = "/v1/admin/clients/{name}/revoke", tag = "clients", security(("bearer" = [])),
    params(("name" = String, Path, description = "The client's name")),
    responses(
        (status = 200, description = "Revoked (or already was): its key opens nothing, on every instance within seconds", body = ClientView),
    )
)]
pub async fn revoke(
    Actor(actor): Actor,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    let row = state
        .store
        .client_table()
        .revoke(&name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    tracing::info!(client = %row.name, %actor, "checkout client revoked");
    refresh(&state).await;
    Ok(Json(ClientView::of(&row, state.clients.defaults())))
}

/// This instance applies the change at once; the others at their next
/// reload.
async fn refresh(state: &AppState) {
    if let Err(error) = state.clients.refresh().await {
        tracing::warn!(%error, "cannot reload the checkout clients");
    }
}
