//! The tests' HTTP client: well-formed requests on `ureq` (a real client,
//! blocking, one connection per agent), and [`raw`] for what no client
//! would send (a gzip bomb, a lying length, a chunked body cut short),
//! byte for byte on a fresh connection.

use std::io::{Read, Write};
use std::time::Duration;

/// An answer: status, headers as `name: value` lines (names and values
/// lower-cased, each line ending in `\r\n`, for `contains`), and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// `method` `path` on loopback `port`, with `headers`, and `body` (for
/// `POST`).
pub fn send(method: &str, port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let agent = agent();
    let result = if method == "POST" || method == "PUT" {
        agent.run(req.body(body.to_vec()).expect("a valid request"))
    } else {
        agent.run(req.body(()).expect("a valid request"))
    };
    let mut resp = match result {
        Ok(r) => r,
        // A server that answers before it has read the request (a refusal
        // at the door, a full pipeline) and closes makes a client that is
        // still writing see a broken pipe or a reset: the raw sender, which
        // reads whatever came back, gets that answer.
        Err(ureq::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            return raw(port, &head, body);
        }
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let mut headers = String::new();
    for (k, v) in resp.headers() {
        headers.push_str(&format!(
            "{}: {}\r\n",
            k.as_str(),
            v.to_str().unwrap_or("").to_lowercase()
        ));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    Reply {
        status: resp.status().as_u16(),
        headers,
        body,
    }
}

/// `GET path`: its status and body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let r = send("GET", port, path, &[], b"");
    (r.status, r.body)
}

/// `POST path` of `body` as `content_type`.
pub fn post(port: u16, path: &str, content_type: &str, body: &[u8]) -> Reply {
    send("POST", port, path, &[("content-type", content_type)], body)
}

/// Bytes as they are (a whole request, head and body) on a fresh
/// connection; the whole answer as text, read until the server closes.
pub fn raw_text(port: u16, head: &str, body: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (413) and close before the whole body is sent:
    // a failed write still leaves its answer to read.
    let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`raw_text`], its answer taken apart.
pub fn raw(port: u16, head: &str, body: &[u8]) -> Reply {
    let text = raw_text(port, head, body);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head
        .split_once("\r\n")
        .map(|(_, h)| format!("{}\r\n", h.to_lowercase()))
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
