//! The OpenAPI 3.1 description of `/v1`, generated from the handlers' `#[utoipa::path]`
//! annotations and the types in [`crate::schemas`] and `hearth_core`, served at
//! `GET /v1/openapi.json` (no key needed: it describes, it holds nothing).

use crate::{artifacts, events, functions, invoke, keys, stats, status, tuning};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hearth",
        description = "hearth's HTTP API, version 1: deploy functions, invoke them, read their invocations. \
                       Errors are `{\"error\": {\"code\", \"message\"}}`. The AWS Lambda API is served on the same port \
                       under /2015-03-31 (see the README).",
        license(name = "Apache-2.0")
    ),
    paths(
        functions::list, functions::get, functions::deploy, functions::delete,
        invoke::invoke, invoke::list, invoke::get,
        artifacts::logs, artifacts::output,
        status::status, stats::functions, events::stream,
        tuning::advice, tuning::apply, tuning::explore,
        keys::create, keys::list, keys::delete, keys::get_namespace, keys::set_namespace, serve,
    ),
    components(schemas(hearth_core::Invocation, hearth_core::FunctionConfig)),
    modifiers(&BearerKey),
    security(("api_key" = []))
)]
pub struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the admin key `hearth up` printed (also in its data dir, admin.key), or a key POST /v1/keys made",
                    ))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "get_openapi", tag = "meta", security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The `/v1` routes `router()` registers, read from its source, as `METHOD /v1/path`.
    fn router_routes() -> BTreeSet<String> {
        let source = include_str!("lib.rs");
        let start = source
            .find("let v1 = Router::new()")
            .expect("the v1 router");
        let end = start + source[start..].find(".nest(\"/v1\"").expect("the nest");
        let block = &source[start..end];
        let mut routes = BTreeSet::new();
        for (i, _) in block.match_indices(".route(") {
            let rest = &block[i..];
            let path_start = rest.find('"').expect("a path") + 1;
            let path_len = rest[path_start..].find('"').expect("its end");
            let path = rest[path_start..path_start + path_len].replace("{*", "{");
            // The methods: what the route's method router chains, up to the next route.
            let next = rest[1..].find(".route").map_or(rest.len(), |n| n + 1);
            for method in ["get", "put", "post", "delete", "patch"] {
                let called = rest[..next].contains(&format!("({method}("))
                    || rest[..next].contains(&format!(" {method}("))
                    || rest[..next].contains(&format!(".{method}("));
                if called {
                    routes.insert(format!("{} /v1{path}", method.to_uppercase()));
                }
            }
        }
        routes
    }

    fn documented_operations(doc: &serde_json::Value) -> impl Iterator<Item = &str> {
        doc["paths"]
            .as_object()
            .into_iter()
            .flat_map(|paths| paths.values())
            .filter_map(|item| item.as_object())
            .flat_map(|item| item.values())
            .filter_map(|op| op["operationId"].as_str())
    }

    #[test]
    fn the_document_covers_every_v1_route_and_only_those() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        let ids: Vec<&str> = documented_operations(&doc).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "operation ids repeat: {ids:?}");
        let routes = router_routes();
        assert!(routes.len() >= 10, "{routes:?}");
        assert_eq!(
            documented, routes,
            "documented (left) and routed (right) differ"
        );
    }

    #[test]
    fn the_invocation_schema_lists_captured_output_as_its_own_members() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let text = doc["components"]["schemas"]["Invocation"].to_string();
        for member in ["\"stdout\"", "\"stderr\"", "\"truncated\"", "\"exit_code\""] {
            assert!(text.contains(member), "{member} missing from {text}");
        }
        assert!(!text.contains("\"output\""), "nested member in {text}");
    }
}
