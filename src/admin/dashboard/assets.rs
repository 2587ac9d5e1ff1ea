//! The dashboard's built files (`dashboard/dist`), embedded at compile time by `build.rs`, served
//! with their content types, long caching for the content-hashed `assets/`, and a strict
//! Content-Security-Policy: scripts, styles and requests from this origin only.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::super::ApiError;

// `ASSETS: &[(&str, &[u8])]`: each file of dashboard/dist by its path relative to it.
include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn file(path: &str) -> Option<&'static [u8]> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, b)| *b)
}

fn serve(path: &str) -> Response {
    let Some(bytes) = file(path) else {
        return ApiError::not_found("dashboard file").into_response();
    };
    // Vite names every file under assets/ by its content hash: cache them for good. Everything
    // else (index.html) is checked again each time, so a new build is picked up at once.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

pub async fn to_index() -> Redirect {
    Redirect::permanent("/dashboard/")
}

pub async fn index() -> Response {
    if ASSETS.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "dashboard_not_built",
            "this binary was built without dashboard/dist (cd dashboard && npm ci && npm run build)",
        )
        .into_response();
    }
    serve("index.html")
}

pub async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_dashboard_is_embedded() {
        let index = std::str::from_utf8(file("index.html").expect("index.html")).unwrap();
        assert!(index.contains("/dashboard/assets/"), "{index}");
        assert!(ASSETS.iter().any(|(p, _)| p.ends_with(".js")));
        assert_eq!(
            content_type("assets/a.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
