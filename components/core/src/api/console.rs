//! `/console/`: the operations console, a static page over this same API. Its three files
//! are embedded in the `.wasm`; the page keeps the API key in `sessionStorage` and sends it
//! as a bearer token, so nothing here authenticates and nothing secret is served.

use crate::foundation::http::{ApiError, ApiResult, Response};
use http::{HeaderValue, StatusCode, header};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// No inline script or style, nothing from another origin, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
    base-uri 'none'; form-action 'none'";

/// The console file at `/console/{file}` (`/console/` is the page itself).
pub fn asset(file: &str) -> ApiResult {
    let (body, content_type) = match file {
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found("console file")),
    };
    let mut resp = Response::new(body.as_bytes().to_vec());
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}
