//! The admin API's OpenAPI document, built from the same registrations as its router.
//!
//! [`Api`] takes each route once (method, path, handler, summary) and makes both the axum route
//! and its OpenAPI operation. The operation's request body, query parameters and responses come
//! from the handler's own signature: its extractors ([`DocInput`]) and its return type
//! ([`DocOutput`]), whose JSON Schemas are derived from the Rust types. A route cannot be served
//! without being documented, nor documented with other types than it uses.

use std::future::Future;

use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::MethodFilter;
use axum::routing::MethodRouter;
use axum::Json;
use schemars::JsonSchema;
use schemars::SchemaGenerator;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// One operation being documented.
#[derive(Default)]
pub struct Operation {
    pub parameters: Vec<Value>,
    pub request_body: Option<Value>,
    pub responses: Map<String, Value>,
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn schema_of<T: JsonSchema>(gen: &mut SchemaGenerator) -> Value {
    serde_json::to_value(gen.subschema_for::<T>()).expect("schemas serialize")
}

/// What an extractor adds to an operation.
pub trait DocInput {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator);
}

impl<T: JsonSchema> DocInput for Result<Json<T>, JsonRejection> {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        op.request_body = Some(json!({ "required": true, "content": json_content(schema_of::<T>(gen)) }));
        op.responses.insert(
            "400".into(),
            json!({ "description": "Malformed JSON, unknown fields or values out of range (`bad_request`).", "content": json_content(schema_of::<tandem_client::api::ApiError>(gen)) }),
        );
        op.responses.insert(
            "413".into(),
            json!({ "description": "The body is over the admin API's body limit.", "content": json_content(schema_of::<tandem_client::api::ApiError>(gen)) }),
        );
    }
}

impl<T: JsonSchema> DocInput for Result<Query<T>, QueryRejection> {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        // Each property of the query type is one query parameter.
        let schema = serde_json::to_value(gen.root_schema_for::<T>()).expect("schemas serialize");
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let mut p = prop.clone();
                let description = p.as_object_mut().and_then(|o| o.remove("description"));
                op.parameters.push(json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "schema": p,
                    "description": description.unwrap_or(Value::String(String::new())),
                }));
            }
        }
        op.responses.insert(
            "400".into(),
            json!({ "description": "A query parameter is unknown or malformed.", "content": json_content(schema_of::<tandem_client::api::ApiError>(gen)) }),
        );
    }
}

/// What a handler's return type says about its answers.
pub trait DocOutput {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator);
}

impl<T: JsonSchema> DocOutput for Json<T> {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        op.responses.insert(
            "200".into(),
            json!({ "description": "Success.", "content": json_content(schema_of::<T>(gen)) }),
        );
    }
}

impl<T: DocOutput> DocOutput for (StatusCode, T) {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        T::document(op, gen);
    }
}

/// Plain-text answers (the health routes).
impl DocOutput for &'static str {
    fn document(op: &mut Operation, _gen: &mut SchemaGenerator) {
        op.responses.insert(
            "200".into(),
            json!({ "description": "Success.", "content": { "text/plain": { "schema": { "type": "string" } } } }),
        );
    }
}

impl DocOutput for String {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        <&'static str as DocOutput>::document(op, gen);
    }
}

/// An answer whose content type the route's description gives (the console page, metrics,
/// event CSV and streams).
impl DocOutput for Response {
    fn document(op: &mut Operation, _gen: &mut SchemaGenerator) {
        op.responses.insert(
            "200".into(),
            json!({ "description": "Success; see the operation's description." }),
        );
    }
}

/// A handler error type: the JSON body every failed call answers with.
pub trait DocError {}

impl<T: DocOutput, E: DocError> DocOutput for Result<T, E> {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        T::document(op, gen);
        for (code, what) in [
            (
                "4XX",
                "Refused: the body names the problem (`code`, `message`; `leader` for `not_leader`).",
            ),
            (
                "5XX",
                "The node cannot do it now (e.g. Raft stopped); the body says why.",
            ),
        ] {
            op.responses.insert(
                code.into(),
                json!({ "description": what, "content": json_content(schema_of::<tandem_client::api::ApiError>(gen)) }),
            );
        }
    }
}

/// A handler whose signature documents an operation; `M` tells the arities apart.
pub trait DocHandler<M> {
    fn document(op: &mut Operation, gen: &mut SchemaGenerator);
}

impl<F, Fut> DocHandler<(Fut,)> for F
where
    F: Fn() -> Fut,
    Fut: Future,
    Fut::Output: DocOutput,
{
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        Fut::Output::document(op, gen);
    }
}

impl<F, Fut, S> DocHandler<(Fut, State<S>)> for F
where
    F: Fn(State<S>) -> Fut,
    Fut: Future,
    Fut::Output: DocOutput,
{
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        Fut::Output::document(op, gen);
    }
}

impl<F, Fut, S, A> DocHandler<(Fut, State<S>, A)> for F
where
    F: Fn(State<S>, A) -> Fut,
    Fut: Future,
    Fut::Output: DocOutput,
    A: DocInput,
{
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        A::document(op, gen);
        Fut::Output::document(op, gen);
    }
}

impl<F, Fut, S, A, B> DocHandler<(Fut, State<S>, A, B)> for F
where
    F: Fn(State<S>, A, B) -> Fut,
    Fut: Future,
    Fut::Output: DocOutput,
    A: DocInput,
    B: DocInput,
{
    fn document(op: &mut Operation, gen: &mut SchemaGenerator) {
        A::document(op, gen);
        B::document(op, gen);
        Fut::Output::document(op, gen);
    }
}

/// Who may call a route once admin tokens are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the port (health routes, the console page, this document).
    Open,
    /// A token of the read or the admin scope.
    Read,
    /// A token of the admin scope.
    Admin,
}

/// Routes and their documentation, registered together.
pub struct Api<S> {
    routes: Vec<(&'static str, MethodRouter<S>)>,
    paths: Map<String, Value>,
    gen: SchemaGenerator,
}

impl<S: Clone + Send + Sync + 'static> Default for Api<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Api<S> {
    pub fn new() -> Self {
        let gen = schemars::generate::SchemaSettings::openapi3().into_generator();
        Self {
            routes: Vec::new(),
            paths: Map::new(),
            gen,
        }
    }

    /// Serve `handler` for `method` at `path`, and document it.
    pub fn route<H, T, M>(mut self, method: &str, path: &'static str, handler: H, summary: &str, access: Access) -> Self
    where
        H: axum::handler::Handler<T, S> + DocHandler<M>,
        T: 'static,
    {
        let filter = match method {
            "get" => MethodFilter::GET,
            "post" => MethodFilter::POST,
            "put" => MethodFilter::PUT,
            other => panic!("no method {other} in the admin API"),
        };
        let mut op = Operation::default();
        H::document(&mut op, &mut self.gen);
        if access != Access::Open {
            for (code, what) in [
                (
                    "401",
                    "A token is needed (`token_required`) or the one sent is unknown (`bad_token`).",
                ),
                ("403", "The token's scope does not allow this call (`forbidden`)."),
            ] {
                op.responses.insert(
                    code.into(),
                    json!({ "description": what, "content": json_content(schema_of::<tandem_client::api::ApiError>(&mut self.gen)) }),
                );
            }
        }
        let (first_line, rest) = summary.split_once(". ").unwrap_or((summary, ""));
        let mut operation = json!({
            "operationId": format!("{method}{}", path.replace(['/', '.', '-'], "_")),
            "summary": first_line.trim_end_matches('.'),
            "responses": op.responses,
            "x-tandem-scope": match access {
                Access::Open => "open",
                Access::Read => "read",
                Access::Admin => "admin",
            },
        });
        if !rest.is_empty() {
            operation["description"] = Value::String(rest.to_string());
        }
        if !op.parameters.is_empty() {
            operation["parameters"] = Value::Array(op.parameters);
        }
        if let Some(body) = op.request_body {
            operation["requestBody"] = body;
        }
        operation["security"] = if access == Access::Open {
            json!([])
        } else {
            json!([{ "bearer": [] }, {}])
        };
        let item = self.paths.entry(path.to_string()).or_insert_with(|| json!({}));
        assert!(item.get(method).is_none(), "{method} {path} registered twice");
        item[method] = operation;
        match self.routes.iter_mut().find(|(p, _)| *p == path) {
            Some((_, router)) => *router = std::mem::take(router).on(filter, handler),
            None => self.routes.push((path, axum::routing::on(filter, handler))),
        }
        self
    }

    /// The router and the OpenAPI document of everything registered.
    pub fn finish(mut self) -> (axum::Router<S>, Value) {
        let schemas = self.gen.take_definitions(true);
        let doc = json!({
            "openapi": "3.1.0",
            "info": {
                "title": "Tandem admin API",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "The admin API every Tandem node serves on its admin port. Once `[[admin_tokens]]` are configured, every route but the open ones needs `Authorization: Bearer <token>`: GET routes a token of the read or admin scope, the others the admin scope (`x-tandem-scope`).",
            },
            "paths": self.paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            },
        });
        let mut router = axum::Router::new();
        for (path, method_router) in self.routes {
            router = router.route(path, method_router);
        }
        (router, doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, JsonSchema)]
    struct Ask {
        /// How many.
        n: u32,
    }

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code)] // read by the query extractor only
    struct Filter {
        /// Only this kind.
        kind: Option<String>,
    }

    struct Refused;
    impl DocError for Refused {}
    impl axum::response::IntoResponse for Refused {
        fn into_response(self) -> Response {
            StatusCode::CONFLICT.into_response()
        }
    }

    async fn take(State(_): State<()>, _body: Result<Json<Ask>, JsonRejection>) -> Result<Json<Ask>, Refused> {
        Ok(Json(Ask { n: 1 }))
    }

    async fn list(State(_): State<()>, _q: Result<Query<Filter>, QueryRejection>) -> Json<Vec<String>> {
        Json(Vec::new())
    }

    #[test]
    fn operations_come_from_the_handlers_signatures() {
        let (_router, doc) = Api::<()>::new()
            .route("post", "/v1/take", take, "Take some. Longer words.", Access::Admin)
            .route("get", "/v1/list", list, "List.", Access::Read)
            .route("get", "/health/live", || async { "live\n" }, "Live.", Access::Open)
            .finish();
        let take = &doc["paths"]["/v1/take"]["post"];
        assert_eq!(take["summary"], "Take some");
        assert_eq!(take["description"], "Longer words.");
        assert_eq!(take["x-tandem-scope"], "admin");
        assert_eq!(
            take["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Ask"
        );
        assert_eq!(
            take["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Ask"
        );
        for code in ["400", "401", "403", "413", "4XX", "5XX"] {
            assert!(take["responses"][code].is_object(), "{code}: {take}");
        }
        assert_eq!(
            doc["components"]["schemas"]["Ask"]["properties"]["n"]["description"],
            "How many."
        );
        let list = &doc["paths"]["/v1/list"]["get"];
        assert_eq!(list["parameters"][0]["name"], "kind");
        assert_eq!(list["parameters"][0]["in"], "query");
        assert_eq!(list["parameters"][0]["required"], false);
        assert_eq!(
            list["responses"]["200"]["content"]["application/json"]["schema"]["type"],
            "array"
        );
        let live = &doc["paths"]["/health/live"]["get"];
        assert_eq!(live["security"], json!([]));
        assert!(live["responses"]["401"].is_null(), "open routes need no token");
        assert!(live["responses"]["200"]["content"]["text/plain"].is_object());
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_route_cannot_be_registered_twice() {
        let _ = Api::<()>::new()
            .route("get", "/v1/list", list, "List.", Access::Read)
            .route("get", "/v1/list", list, "List.", Access::Read);
    }
}
