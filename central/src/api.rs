//! The operator HTTP+JSON API (axum). Every error is a JSON body `{"error": "...", "kind": "..."}` with a status
//! that fits (400 bad input, 401 missing or wrong operator token, 403 not entitled / key mismatch / not ordered, 404 unknown, 409 conflict, replay or
//! wrong counter, 501 not wired, 502 issuer or vault failure). Endpoints are listed in `docs/central.md`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::CentralError;
use crate::registry::{self, Entitlement, NewOrderItem, RevocationReason};
use crate::service::Central;

/// A [`CentralError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub CentralError);

impl From<CentralError> for ApiError {
    fn from(e: CentralError) -> Self {
        ApiError(e)
    }
}

/// The JSON body of every error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// The error kind, for programs (see [`CentralError::kind`]).
    pub kind: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(error = %self.0, "request failed");
        }
        (status, Json(ErrorBody { error: self.0.to_string(), kind: self.0.kind().into() })).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError(CentralError::Invalid(format!("JSON body: {e}"))))
}

/// The router over `central`. With `operator_token`, every operator endpoint wants `Authorization: Bearer TOKEN`
/// (401 otherwise); the device endpoints (requests, receipts: authenticated by their signatures) and the CRL
/// download (public by nature) stay open.
pub fn router(central: Arc<Central>, operator_token: Option<String>) -> Router {
    let operator = Router::new()
        .route("/api/device-types", get(list_device_types).post(add_device_type))
        .route("/api/devices", get(list_devices).post(entitle))
        .route("/api/devices/unconfirmed", get(unconfirmed))
        .route("/api/devices/{serial}", get(show_device))
        .route("/api/devices/{serial}/disentitle", post(disentitle))
        .route("/api/devices/{serial}/replace", post(replace))
        .route("/api/orders", get(list_orders).post(create_order))
        .route("/api/certificates", get(list_certificates))
        .route("/api/certificates/expiring", get(expiring))
        .route("/api/certificates/{serial}", get(certificate_der))
        .route("/api/certificates/{serial}/revoke", post(revoke))
        .route("/api/cas", get(list_cas).post(create_ca))
        .route("/api/cas/{name}/crl", post(publish_crl))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(operator_token), require_token));
    let public = Router::new()
        .route("/api/cas/{name}/crl", get(crl))
        .route("/api/requests", post(request))
        .route("/api/receipts", post(receipt));
    operator
        .merge(public)
        .fallback(|| async { ApiError(CentralError::NotFound("no such endpoint".into())) })
        .with_state(central)
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use subtle::ConstantTimeEq as _;
    let Some(want) = token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(want.as_bytes())) {
        next.run(request).await
    } else {
        ApiError(CentralError::Unauthorized).into_response()
    }
}

/// Serves the API on `listener` until `shutdown` resolves (see [`router`] for `operator_token`).
pub async fn serve(
    central: Arc<Central>,
    operator_token: Option<String>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(central, operator_token)).with_graceful_shutdown(shutdown).await
}

type St = State<Arc<Central>>;

#[derive(Deserialize)]
struct NewDeviceType {
    name: String,
    #[serde(default)]
    description: String,
}

async fn list_device_types(State(c): St) -> ApiResult<Json<Vec<registry::DeviceType>>> {
    Ok(Json(registry::device_types(c.db()).await?))
}

async fn add_device_type(State(c): St, body: Bytes) -> ApiResult<(StatusCode, Json<registry::DeviceType>)> {
    let t: NewDeviceType = json(&body)?;
    Ok((StatusCode::CREATED, Json(registry::add_device_type(c.db(), &t.name, &t.description).await?)))
}

async fn list_devices(State(c): St) -> ApiResult<Json<Vec<registry::Device>>> {
    Ok(Json(registry::devices(c.db()).await?))
}

async fn show_device(State(c): St, Path(serial): Path<String>) -> ApiResult<Json<registry::Device>> {
    Ok(Json(registry::device(c.db(), &serial).await?))
}

async fn unconfirmed(State(c): St) -> ApiResult<Json<Vec<registry::Device>>> {
    Ok(Json(registry::unconfirmed(c.db()).await?))
}

async fn entitle(State(c): St, body: Bytes) -> ApiResult<Json<registry::Device>> {
    let e: Entitlement = json(&body)?;
    Ok(Json(registry::entitle(c.db(), &e).await?))
}

async fn disentitle(State(c): St, Path(serial): Path<String>) -> ApiResult<Json<registry::Device>> {
    Ok(Json(registry::disentitle(c.db(), &serial).await?))
}

#[derive(Deserialize)]
struct Replacement {
    serial: String,
    #[serde(default)]
    device_public_key: Option<String>,
    #[serde(default)]
    transport_public_key: Option<String>,
}

async fn replace(State(c): St, Path(old): Path<String>, body: Bytes) -> ApiResult<Json<registry::Device>> {
    let r: Replacement = json(&body)?;
    let new = Entitlement {
        serial: r.serial,
        device_type: String::new(),
        device_public_key: r.device_public_key,
        transport_public_key: r.transport_public_key,
    };
    Ok(Json(c.replace_dongle(&old, &new).await?))
}

#[derive(Deserialize)]
struct DeviceFilter {
    device: Option<String>,
}

#[derive(Deserialize)]
struct NewOrder {
    device: String,
    items: Vec<NewOrderItem>,
}

async fn list_orders(State(c): St, Query(f): Query<DeviceFilter>) -> ApiResult<Json<Vec<registry::Order>>> {
    Ok(Json(registry::orders(c.db(), f.device.as_deref()).await?))
}

async fn create_order(State(c): St, body: Bytes) -> ApiResult<(StatusCode, Json<registry::Order>)> {
    let o: NewOrder = json(&body)?;
    Ok((StatusCode::CREATED, Json(registry::create_order(c.db(), &o.device, &o.items).await?)))
}

async fn list_certificates(
    State(c): St,
    Query(f): Query<DeviceFilter>,
) -> ApiResult<Json<Vec<registry::CertificateRecord>>> {
    Ok(Json(registry::certificates(c.db(), f.device.as_deref()).await?))
}

#[derive(Deserialize)]
struct Days {
    days: u32,
}

async fn expiring(State(c): St, Query(d): Query<Days>) -> ApiResult<Json<Vec<registry::CertificateRecord>>> {
    Ok(Json(registry::expiring(c.db(), d.days).await?))
}

async fn certificate_der(State(c): St, Path(serial): Path<String>) -> ApiResult<Response> {
    let der = registry::certificate_der(c.db(), &serial).await?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-cert")], der).into_response())
}

#[derive(Deserialize)]
struct Revoke {
    #[serde(default = "unspecified")]
    reason: RevocationReason,
}

fn unspecified() -> RevocationReason {
    RevocationReason::Unspecified
}

async fn revoke(State(c): St, Path(serial): Path<String>, body: Bytes) -> ApiResult<Json<registry::CertificateRecord>> {
    let r: Revoke = if body.is_empty() { Revoke { reason: unspecified() } } else { json(&body)? };
    Ok(Json(c.revoke(&serial, r.reason).await?))
}

#[derive(Deserialize)]
struct NewCa {
    name: String,
    key_uri: String,
    common_name: String,
    #[serde(default = "ten_years")]
    validity_days: u32,
}

fn ten_years() -> u32 {
    3650
}

async fn list_cas(State(c): St) -> ApiResult<Json<Vec<crate::service::CaInfo>>> {
    Ok(Json(c.cas().await?))
}

async fn create_ca(State(c): St, body: Bytes) -> ApiResult<(StatusCode, Json<crate::service::CaInfo>)> {
    let n: NewCa = json(&body)?;
    Ok((StatusCode::CREATED, Json(c.create_ca(&n.name, &n.key_uri, &n.common_name, n.validity_days).await?)))
}

fn crl_response(der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response()
}

async fn crl(State(c): St, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(crl_response(c.crl(&name).await?))
}

async fn publish_crl(State(c): St, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(crl_response(c.publish_crl(&name).await?))
}

async fn request(State(c): St, body: Bytes) -> ApiResult<Response> {
    let update = c.process_file(&body).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response())
}

async fn receipt(State(c): St, body: Bytes) -> ApiResult<Json<crate::processing::ReceiptOutcome>> {
    Ok(Json(c.receipt_file(&body).await?))
}
