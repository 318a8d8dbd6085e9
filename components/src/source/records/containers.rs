//! Container log lines: Docker's JSON and CRI's text unwrapped into
//! their stream, time, partial flag and text, and the Kubernetes
//! metadata a pod's log file name carries.

use super::*;

/// A container runtime's log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// containerd and CRI-O: `TIME STREAM P|F CONTENT`.
    Cri,
    /// Docker's json-file: `{"log":"...\n","stream":"stdout","time":"..."}`.
    Docker,
}

impl Container {
    pub fn of(format: Format) -> Option<Container> {
        match format {
            Format::Cri => Some(Container::Cri),
            Format::Docker => Some(Container::Docker),
            _ => None,
        }
    }
}

/// One container log line: its time, stream, content and whether it is
/// whole.
pub(super) struct Unwrapped<'a> {
    pub(super) time: Option<Stamp>,
    pub(super) stream: Cow<'a, str>,
    pub(super) content: Cow<'a, [u8]>,
    pub(super) whole: bool,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct DockerLine<'a> {
    #[serde(borrow)]
    pub(super) log: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) stream: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) time: Cow<'a, str>,
}

pub(super) fn unwrap(container: Container, line: &[u8]) -> Result<Unwrapped<'_>, String> {
    match container {
        Container::Cri => {
            let mut parts = line.splitn(4, |&b| b == b' ');
            let time = parts.next().unwrap_or_default();
            let stream = parts.next().ok_or("CRI log line without a stream")?;
            let tag = parts.next().ok_or("CRI log line without its P/F tag")?;
            let content = parts.next().unwrap_or_default();
            // The tag may carry more, colon-separated (`F:x`); its first
            // part is the partial flag.
            let whole = match tag.split(|&b| b == b':').next() {
                Some(b"F") => true,
                Some(b"P") => false,
                _ => return Err("CRI log line: the tag is neither P nor F".into()),
            };
            let time = std::str::from_utf8(time).map_err(|_| "CRI time is not text")?;
            let Some(stamp) = timestamp::parse_raw(timestamp::Raw::Str(time), &TimeFormat::Rfc3339)
            else {
                return Err(format!("CRI log line: `{time}` is not an RFC 3339 time"));
            };
            Ok(Unwrapped {
                time: Some(stamp),
                stream: String::from_utf8_lossy(stream),
                content: Cow::Borrowed(content),
                whole,
            })
        }
        Container::Docker => {
            let d: DockerLine<'_> =
                serde_json::from_slice(line).map_err(|e| format!("docker json-file line: {e}"))?;
            let (content, whole) = match d.log {
                Cow::Borrowed(s) => match s.strip_suffix('\n') {
                    Some(t) => (Cow::Borrowed(t.as_bytes()), true),
                    None => (Cow::Borrowed(s.as_bytes()), false),
                },
                Cow::Owned(s) => {
                    let whole = s.ends_with('\n');
                    let mut b = s.into_bytes();
                    if whole {
                        b.pop();
                    }
                    (Cow::Owned(b), whole)
                }
            };
            Ok(Unwrapped {
                time: timestamp::parse_raw(timestamp::Raw::Str(&d.time), &TimeFormat::Rfc3339),
                stream: d.stream,
                content,
                whole,
            })
        }
    }
}

/// Kubernetes' names for a container's log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Kubernetes {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: Option<String>,
    pub container: String,
    pub container_id: Option<String>,
}

impl Kubernetes {
    /// From `/var/log/pods/NS_POD_UID/CONTAINER/N.log` or
    /// `/var/log/containers/POD_NS_CONTAINER-ID.log`.
    pub fn of_path(path: &std::path::Path) -> Option<Kubernetes> {
        let parts: Vec<&str> = path.iter().filter_map(|p| p.to_str()).collect();
        let n = parts.len();
        if n >= 3 && parts.get(n.wrapping_sub(4)) == Some(&"pods") {
            let mut pod = parts[n - 3].splitn(3, '_');
            let (ns, name, uid) = (pod.next()?, pod.next()?, pod.next()?);
            return Some(Kubernetes {
                namespace: ns.into(),
                pod: name.into(),
                pod_uid: Some(uid.into()),
                container: parts[n - 2].into(),
                container_id: None,
            });
        }
        let file = path.file_name()?.to_str()?.strip_suffix(".log")?;
        let (rest, id) = file.rsplit_once('-')?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut p = rest.splitn(3, '_');
        let (pod, ns, container) = (p.next()?, p.next()?, p.next()?);
        Some(Kubernetes {
            namespace: ns.into(),
            pod: pod.into(),
            pod_uid: None,
            container: container.into(),
            container_id: Some(id.into()),
        })
    }
}
