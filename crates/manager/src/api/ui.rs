//! The web dashboard: the files of `crates/manager/ui/` (plain HTML, CSS and JavaScript
//! modules, no build step), embedded in the binary so that a manager serves them offline
//! and a binary never pairs with the files of another version. Served at `/ui/` without a
//! token: they hold no data, and the page signs in with the API token itself (every call
//! it makes sends `Authorization: Bearer`). `/` and `/ui` redirect to `/ui/`.
//!
//! Each answer carries a strict Content-Security-Policy (the page's own origin only: no
//! inline script or style, no other host, no form posting anywhere), so that a service
//! name or a log line shown by the page can never run as code, and an `ETag` with
//! `Cache-Control: no-cache`: a browser revalidates each file and a new binary's files
//! are picked up at once, while an unchanged file costs a 304.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    /// A digest of `body` (FNV-1a, computed at compile time): the file's `ETag`.
    digest: u64,
}

const fn asset(name: &'static str, body: &'static [u8], content_type: &'static str) -> Asset {
    Asset {
        name,
        body,
        content_type,
        digest: fnv1a(body),
    }
}

/// FNV-1a over `bytes`: not a secret's hash, only a version tag that changes with the
/// file.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The dashboard's files, by the name they are served under (`/ui/<name>`).
const ASSETS: &[Asset] = &[
    asset("index.html", include_bytes!("../../ui/index.html"), HTML),
    asset(
        "app.css",
        include_bytes!("../../ui/app.css"),
        "text/css; charset=utf-8",
    ),
    asset("app.js", include_bytes!("../../ui/app.js"), JS),
    asset("api.js", include_bytes!("../../ui/api.js"), JS),
    asset("live.js", include_bytes!("../../ui/live.js"), JS),
    asset("dom.js", include_bytes!("../../ui/dom.js"), JS),
    asset("services.js", include_bytes!("../../ui/services.js"), JS),
    asset("service.js", include_bytes!("../../ui/service.js"), JS),
    asset("workers.js", include_bytes!("../../ui/workers.js"), JS),
    asset("map.js", include_bytes!("../../ui/map.js"), JS),
    asset("events.js", include_bytes!("../../ui/events.js"), JS),
    asset(
        "favicon.svg",
        include_bytes!("../../ui/favicon.svg"),
        "image/svg+xml",
    ),
];

/// The page's own origin for everything, nothing else: no inline code, no framing, no
/// form submitted anywhere (the sign-in form is read by the script, so a token can never
/// end up in a URL even with scripts off).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Where `/` and `/ui` send a browser.
pub const HOME: &str = "/ui/";

/// `GET /` and `GET /ui`: a redirect to the dashboard.
pub async fn to_dashboard() -> Response {
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static(HOME));
    secure(headers);
    response
}

/// `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(asset) => serve(asset, &headers),
        None => missing("index.html").into_response(),
    }
}

/// `GET /ui/<name>`: one of the page's files.
pub async fn file(
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let asset = find(&name).ok_or_else(|| missing(&name))?;
    Ok(serve(asset, &headers))
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

fn missing(name: &str) -> ApiError {
    let known: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "the dashboard has no file {name:?} (it has {}); open /ui/",
            known.join(", ")
        ),
    )
}

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.digest);
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    // Revalidate every time: the names carry no version, and a 304 costs nothing.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

/// The headers every dashboard answer carries.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// Whether `path` is one of the dashboard's (open to anyone: the files hold no data).
pub fn is_dashboard(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_named_once_and_the_page_loads_only_embedded_files() {
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len());
        // Every `./x.js` a module imports, and every file the page links, is embedded.
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            for quoted in text.split(['"', '\'']).filter(|s| {
                (s.starts_with("./") || s.starts_with("/ui/"))
                    && (s.ends_with(".js") || s.ends_with(".css") || s.ends_with(".svg"))
            }) {
                let name = quoted.trim_start_matches("./").trim_start_matches("/ui/");
                assert!(find(name).is_some(), "{} refers to {quoted}", asset.name);
            }
        }
    }

    #[test]
    fn digests_differ_with_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn dashboard_paths() {
        assert!(is_dashboard("/"));
        assert!(is_dashboard("/ui"));
        assert!(is_dashboard("/ui/app.js"));
        assert!(!is_dashboard("/uix"));
        assert!(!is_dashboard("/api/v1/stats"));
    }
}
