//! The browser console's files, served by the WebSocket listener so the
//! page and its WebSocket share one origin: our page (`/console.html`,
//! `/console.js`, `/console.css`) and the vendored noVNC release under
//! `/novnc/<version>/` (`synnefo-api/assets/novnc/README.md` says where it
//! came from). Everything is embedded at build time (`build.rs`); a request
//! is answered only for a path in that table, so nothing on disk can be
//! reached through it.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Path of the console page; the API's console URLs point here.
pub const CONSOLE_PAGE: &str = "/console.html";

/// The page's Content-Security-Policy: its own scripts and styles only, and
/// connections back to this origin (the WebSocket).
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'";

/// The embedded file at URL `path`, with its ETag.
pub(crate) fn lookup(path: &str) -> Option<(&'static [u8], &'static str)> {
    ASSETS
        .binary_search_by(|(p, _, _)| (*p).cmp(path))
        .ok()
        .map(|i| (ASSETS[i].1, ASSETS[i].2))
}

/// Paths of the files served at the root (the page and its script and style).
pub(crate) fn root_paths() -> impl Iterator<Item = &'static str> {
    ASSETS
        .iter()
        .map(|(p, _, _)| *p)
        .filter(|p| p.rfind('/') == Some(0))
}

/// The Content-Type for a file name. ES modules must come as JavaScript.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("md" | "txt") => "text/plain; charset=utf-8",
        _ if !path.rsplit('/').next().unwrap_or("").contains('.') => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Answers a GET (or HEAD) for `path`: 200 with the file, 304 when the
/// client's `If-None-Match` names the current version, 404 otherwise.
/// noVNC's files live under a versioned path and are cached for a year;
/// the page and its script must be revalidated (`no-cache`) so an upgrade
/// is picked up at once.
pub(crate) fn respond(path: &str, headers: &HeaderMap) -> Response {
    let Some((body, etag)) = lookup(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let versioned = path.starts_with(&format!("/novnc/{NOVNC_VERSION}/"));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let mut resp = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page's URL carries the one-time token: never send it onwards.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if path.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_holds_the_page_and_novnc() {
        assert!(ASSETS.windows(2).all(|w| w[0].0 < w[1].0));
        for p in [
            CONSOLE_PAGE,
            "/console.js",
            "/console.css",
            &format!("/novnc/{NOVNC_VERSION}/core/rfb.js"),
            &format!("/novnc/{NOVNC_VERSION}/vendor/pako/lib/zlib/inflate.js"),
            &format!("/novnc/{NOVNC_VERSION}/LICENSE.txt"),
        ] {
            assert!(lookup(p).is_some(), "{p} missing");
        }
        assert!(lookup("/novnc/README.md").is_none());
        assert!(lookup(&format!("/novnc/{NOVNC_VERSION}/README.md")).is_none());
        let roots: Vec<_> = root_paths().collect();
        assert_eq!(roots, ["/console.css", "/console.html", "/console.js"]);
    }

    #[test]
    fn page_loads_the_vendored_version() {
        let js = std::str::from_utf8(lookup("/console.js").unwrap().0).unwrap();
        let import = format!("'./novnc/{NOVNC_VERSION}/core/rfb.js'");
        assert!(js.contains(&import), "console.js must import {import}");
        let readme = include_str!("../../assets/novnc/README.md");
        assert!(readme.contains(&format!("version\n**{NOVNC_VERSION}**")));
        // Tempest's test_novnc checks these in the page.
        let html = std::str::from_utf8(lookup(CONSOLE_PAGE).unwrap().0).unwrap();
        for needle in ["<html", "</html>", "noVNC", "<script"] {
            assert!(html.contains(needle), "{needle}");
        }
    }

    #[test]
    fn content_types_caching_and_traversal() {
        let h = HeaderMap::new();
        let js = respond(&format!("/novnc/{NOVNC_VERSION}/core/rfb.js"), &h);
        assert_eq!(js.status(), StatusCode::OK);
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(
            js.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let page = respond(CONSOLE_PAGE, &h);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(page.headers()[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(
            respond("/console.css", &h).headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        assert_eq!(
            respond(&format!("/novnc/{NOVNC_VERSION}/AUTHORS"), &h).headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        // Revalidation.
        let etag = page.headers()[header::ETAG].clone();
        let mut cond = HeaderMap::new();
        cond.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(
            respond(CONSOLE_PAGE, &cond).status(),
            StatusCode::NOT_MODIFIED
        );
        cond.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert_eq!(respond(CONSOLE_PAGE, &cond).status(), StatusCode::OK);
        // Only table entries: no traversal, no directories, no source files.
        for p in [
            "/novnc/../Cargo.toml",
            &format!("/novnc/{NOVNC_VERSION}/../../build.rs"),
            &format!("/novnc/{NOVNC_VERSION}/core/"),
            &format!("/novnc/{NOVNC_VERSION}/core/../core/rfb.js"),
            "/novnc/%2e%2e/Cargo.toml",
            "/etc/passwd",
            "",
        ] {
            assert_eq!(respond(p, &h).status(), StatusCode::NOT_FOUND, "{p}");
        }
    }
}
