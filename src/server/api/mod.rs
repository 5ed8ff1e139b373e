//! The `/api` routes (SPEC §8), one module per area, each an [`OpenApiRouter`] whose handlers
//! carry their OpenAPI description (`#[utoipa::path]`), so `/api/openapi.json` is generated from
//! the handlers and their types. Every route here needs a token ([`super::auth::require`]).

pub mod audit;
pub mod cleanup;
pub mod jobs;
pub mod page;
pub mod queue;
pub mod scans;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, SecurityRequirement};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Every `/api` route, behind the token check.
pub fn routes(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(cleanup::routes())
        .merge(queue::routes())
        .merge(audit::routes())
        .merge(scans::routes())
        .merge(jobs::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::auth::require,
        ))
}

/// The document's title, version and bearer security, applied to every operation.
pub fn finish_openapi(mut doc: OpenApi) -> OpenApi {
    doc.info.title = "assetgc".to_string();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.info.contact = None;
    doc.info.license = Some(utoipa::openapi::License::new("MIT OR Apache-2.0"));
    doc.info.description = Some(
        "Finds orphaned and missing files between an application's storage and its database, and cleans up safely."
            .to_string(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    doc
}
