//! Who may use the admin port: the token, the `Host` names accepted, and
//! the refusal of cross-site requests.

use super::*;

/// Whether a request carries the admin token (`Authorization: Bearer`,
/// or `?token=` for a browser opening the page), compared in constant time.
pub(super) fn authorized(admin: &Admin, headers: &hyper::HeaderMap, query: Option<&str>) -> bool {
    let Some(token) = &admin.token else {
        return true;
    };
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| decoded(query).remove("token"));
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// The host part of a `Host` header: `[::1]:9598` -> `::1`,
/// `example.com:80` -> `example.com`.
pub(super) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// Whether a `Host` names this port: an IP address (DNS rebinding needs a
/// name), `localhost`, or a name of `[admin] hosts`.
pub(super) fn host_allowed(admin: &Admin, host: &str) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || admin.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Why a request that changes state (`POST`) is refused, if it is: one a
/// page on another site could send is. A browser sends a form (or a
/// `fetch` without a preflight) only as `application/x-www-form-urlencoded`,
/// `multipart/form-data` or `text/plain`, so a JSON content type is
/// required; an `Origin` must be this port's own; and with a token set, it
/// must come in the `Authorization` header (not a `?token=` link).
pub(super) fn cross_site(
    admin: &Admin,
    headers: &hyper::HeaderMap,
    host: &str,
) -> Option<&'static str> {
    let json = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            // Neither is a type a foreign page's form may send without a
            // CORS preflight (which this port never answers).
            let t = t.trim();
            t.eq_ignore_ascii_case("application/json") || t.eq_ignore_ascii_case("application/wasm")
        });
    if !json {
        return Some("a POST to the admin port needs `Content-Type: application/json` (or `application/wasm` for a component)");
    }
    if let Some(origin) = headers.get(hyper::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !own {
            return Some("a POST from another origin is refused");
        }
    }
    if admin.token.is_some() && headers.get(hyper::header::AUTHORIZATION).is_none() {
        return Some("a POST carries the token in `Authorization: Bearer TOKEN`");
    }
    None
}

/// The middleware in front of every route: the `Host` must name this
/// port, a `POST` must not be one a foreign page could send, and with a
/// token, every endpoint but `/health` requires it.
pub(super) async fn require_token(
    State(admin): State<Arc<Admin>>,
    req: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !host_allowed(&admin, &host) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            format!("this admin port does not answer to `Host: {host}` (add the name to [admin] hosts)\n"),
        )
        .into_response();
    }
    if req.method() == hyper::Method::POST {
        if let Some(why) = cross_site(&admin, req.headers(), &host) {
            return reply(StatusCode::FORBIDDEN, "text/plain", format!("{why}\n")).into_response();
        }
    }
    if req.uri().path() != "/health" && !authorized(&admin, req.headers(), req.uri().query()) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("content-type", "text/plain")
            .header("www-authenticate", "Bearer")
            .body(
                Full::new(Bytes::from_static(
                    b"this admin port wants its token: Authorization: Bearer TOKEN (or ?token=TOKEN for the page)\n",
                ))
                .boxed(),
            )
            .expect("static response parts are valid")
            .into_response();
    }
    next.run(req).await
}
