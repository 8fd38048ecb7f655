//! The web console: one self-contained page (HTML, CSS and JavaScript inline, nothing loaded
//! from elsewhere) served by every node at `GET /` and `GET /console` on the admin port. It
//! reads the node's own admin API (same origin) every second and sends the operator's
//! switchover, maintenance and forced-failover requests to it.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, built into the binary.
pub const PAGE: &str = include_str!("index.html");

/// What the page may load and who may frame it: only its own inline script and style and
/// requests to this node; no framing (its buttons act on the cluster).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `GET /console`.
pub async fn page() -> axum::response::Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_small() {
        assert!(PAGE.len() < 300 * 1024, "{} bytes", PAGE.len());
        // Nothing is loaded from elsewhere: no external scripts, styles, fonts or images.
        for needle in [
            "src=\"http",
            "href=\"http",
            "@import",
            "url(",
            "<script src",
            "rel=\"stylesheet",
        ] {
            assert!(
                !PAGE.contains(needle),
                "the console loads an external resource: {needle}"
            );
        }
        // The element ids the end-to-end test and operators' scripts rely on.
        for id in [
            "active-node",
            "leader-node",
            "btn-switchover",
            "btn-maintenance",
            "btn-failover",
            "btn-failover-confirm",
            "failover-report",
            "message",
            "events",
            "nodes",
        ] {
            assert!(PAGE.contains(&format!("id=\"{id}\"")), "no element #{id}");
        }
    }
}
