//! Grok: `%{NAME}`, `%{NAME:field}` and `%{NAME:field:int|float}` over a
//! library of named patterns, compiled to one regular expression (Rust's
//! `regex`: linear time whatever the input, so no pattern can backtrack
//! catastrophically).
//!
//! The library has the standard names operators know from Logstash
//! (written here for this crate): numbers, words, addresses, paths and
//! URIs, dates and times, syslog headers, and the Apache/nginx access and
//! error logs.

use std::collections::BTreeMap;

/// `NAME definition` lines.
pub const LIBRARY: &str = r#"
USERNAME [a-zA-Z0-9._-]+
USER %{USERNAME}
EMAILLOCALPART [a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+)*
EMAILADDRESS %{EMAILLOCALPART}@%{HOSTNAME}
INT [+-]?[0-9]+
BASE10NUM [+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)
NUMBER %{BASE10NUM}
BASE16NUM (?:0[xX])?[0-9A-Fa-f]+
BASE16FLOAT [+-]?(?:0[xX])?(?:[0-9A-Fa-f]+(?:\.[0-9A-Fa-f]*)?|\.[0-9A-Fa-f]+)
POSINT [1-9][0-9]*
NONNEGINT [0-9]+
WORD \b\w+\b
NOTSPACE \S+
SPACE \s*
DATA .*?
GREEDYDATA .*
QUOTEDSTRING "(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`
QS %{QUOTEDSTRING}
UUID [A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}
URN urn:[0-9A-Za-z][0-9A-Za-z-]{0,31}:(?:%[0-9a-fA-F]{2}|[0-9A-Za-z()+,.:=@;$_!*'/?#-])+
MAC %{CISCOMAC}|%{WINDOWSMAC}|%{COMMONMAC}
CISCOMAC (?:[A-Fa-f0-9]{4}\.){2}[A-Fa-f0-9]{4}
WINDOWSMAC (?:[A-Fa-f0-9]{2}-){5}[A-Fa-f0-9]{2}
COMMONMAC (?:[A-Fa-f0-9]{2}:){5}[A-Fa-f0-9]{2}
IPV6 (?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|:(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:)|(?:[0-9A-Fa-f]{1,4}:){6}%{IPV4}|::(?:[fF]{4}:)?%{IPV4}
IPV4 (?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])
IP %{IPV6}|%{IPV4}
HOSTNAME \b(?:[0-9A-Za-z][0-9A-Za-z-]{0,62})(?:\.(?:[0-9A-Za-z][0-9A-Za-z-]{0,62}))*\.?\b
IPORHOST %{IP}|%{HOSTNAME}
HOSTPORT %{IPORHOST}:%{POSINT}
PATH %{UNIXPATH}|%{WINPATH}
UNIXPATH (?:/[\w_%!$@:.,+~-]*)+
TTY /dev/(?:pts|tty(?:[pq])?)(?:\w+)?/?(?:[0-9]+)
WINPATH (?:[A-Za-z]+:|\\)(?:\\[^\\?*]*)+
URIPROTO [A-Za-z][A-Za-z0-9+.-]+
URIHOST %{IPORHOST}(?::%{POSINT})?
URIPATH (?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_-]*)+
URIQUERY [A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\[\]-]*
URIPARAM \?%{URIQUERY}
URIPATHPARAM %{URIPATH}(?:%{URIPARAM})?
URI %{URIPROTO}://(?:%{USER}(?::[^@]*)?@)?(?:%{URIHOST})?(?:%{URIPATH}(?:%{URIPARAM})?)?
MONTH \b(?:[Jj]an(?:uary|uar)?|[Ff]eb(?:ruary|ruar)?|[Mm](?:a|ä)?r(?:ch|z)?|[Aa]pr(?:il)?|[Mm]a(?:y|i)?|[Jj]un(?:e|i)?|[Jj]ul(?:y|i)?|[Aa]ug(?:ust)?|[Ss]ep(?:tember)?|[Oo](?:c|k)?t(?:ober)?|[Nn]ov(?:ember)?|[Dd]e(?:c|z)(?:ember)?)\b
MONTHNUM 0?[1-9]|1[0-2]
MONTHNUM2 0[1-9]|1[0-2]
MONTHDAY (?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9]
DAY \b(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)\b
YEAR (?:\d\d){1,2}
HOUR 2[0123]|[01]?[0-9]
MINUTE [0-5][0-9]
SECOND (?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?
TIME %{HOUR}:%{MINUTE}(?::%{SECOND})
DATE_US %{MONTHNUM}[/-]%{MONTHDAY}[/-]%{YEAR}
DATE_EU %{MONTHDAY}[./-]%{MONTHNUM}[./-]%{YEAR}
ISO8601_TIMEZONE Z|[+-]%{HOUR}(?::?%{MINUTE})
ISO8601_SECOND %{SECOND}
TIMESTAMP_ISO8601 %{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?%{ISO8601_TIMEZONE}?
DATE %{DATE_US}|%{DATE_EU}
DATESTAMP %{DATE}[- ]%{TIME}
TZ [A-Z]{3}
DATESTAMP_RFC822 %{DAY} %{MONTH} %{MONTHDAY} %{YEAR} %{TIME} %{TZ}
DATESTAMP_RFC2822 %{DAY}, %{MONTHDAY} %{MONTH} %{YEAR} %{TIME} %{ISO8601_TIMEZONE}
DATESTAMP_OTHER %{DAY} %{MONTH} %{MONTHDAY} %{TIME} %{TZ} %{YEAR}
DATESTAMP_EVENTLOG %{YEAR}%{MONTHNUM2}%{MONTHDAY}%{HOUR}%{MINUTE}%{SECOND}
HTTPDERROR_DATE %{DAY} %{MONTH} %{MONTHDAY} %{TIME} %{YEAR}
HTTPDATE %{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} %{INT}
SYSLOGTIMESTAMP %{MONTH} +%{MONTHDAY} %{TIME}
PROG [\x21-\x5a\x5c\x5e-\x7e]+
SYSLOGPROG %{PROG:program}(?:\[%{POSINT:pid}\])?
SYSLOGHOST %{IPORHOST}
SYSLOGFACILITY <%{NONNEGINT:facility}.%{NONNEGINT:priority}>
SYSLOGBASE %{SYSLOGTIMESTAMP:timestamp} (?:%{SYSLOGFACILITY} )?%{SYSLOGHOST:logsource} %{SYSLOGPROG}:
SYSLOGLINE %{SYSLOGBASE} %{GREEDYDATA:message}
LOGLEVEL [Aa]lert|ALERT|[Tt]race|TRACE|[Dd]ebug|DEBUG|[Nn]otice|NOTICE|[Ii]nfo?(?:rmation)?|INFO?(?:RMATION)?|[Ww]arn?(?:ing)?|WARN?(?:ING)?|[Ee]rr?(?:or)?|ERR?(?:OR)?|[Cc]rit?(?:ical)?|CRIT?(?:ICAL)?|[Ff]atal|FATAL|[Ss]evere|SEVERE|EMERG(?:ENCY)?|[Ee]merg(?:ency)?
HTTPD_COMMONLOG %{IPORHOST:client} %{HTTPDUSER:ident} %{HTTPDUSER:user} \[%{HTTPDATE:timestamp}\] "(?:%{WORD:method} %{NOTSPACE:path}(?: HTTP/%{NUMBER:http_version})?|%{DATA:request})" %{NUMBER:status:int} (?:%{NUMBER:size:int}|-)
HTTPD_COMBINEDLOG %{HTTPD_COMMONLOG} %{QS:referer} %{QS:agent}
HTTPDUSER %{EMAILADDRESS}|%{USER}
HTTPD20_ERRORLOG \[%{HTTPDERROR_DATE:timestamp}\] \[%{LOGLEVEL:severity}\] (?:\[client %{IPORHOST:client}\] )?%{GREEDYDATA:message}
HTTPD24_ERRORLOG \[%{HTTPDERROR_DATE:timestamp}\] \[(?:%{WORD:module})?:%{LOGLEVEL:severity}\] \[pid %{POSINT:pid:int}(?::tid %{NUMBER:tid:int})?\]%{SPACE}(?:\(%{POSINT:errno}\)%{DATA:errortext}: )?(?:\[client %{IPORHOST:client}(?::%{POSINT:client_port})?\] )?(?:%{DATA:code}: )?%{GREEDYDATA:message}
HTTPD_ERRORLOG %{HTTPD20_ERRORLOG}|%{HTTPD24_ERRORLOG}
COMMONAPACHELOG %{HTTPD_COMMONLOG}
COMBINEDAPACHELOG %{HTTPD_COMBINEDLOG}
NGINXERRORDATE [0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}
NGINX_ERRORLOG %{NGINXERRORDATE:timestamp} \[%{LOGLEVEL:severity}\] %{POSINT:pid:int}#%{NUMBER:tid:int}: %{GREEDYDATA:message}
JAVACLASS (?:[a-zA-Z$_][a-zA-Z$_0-9]*\.)*[a-zA-Z$_][a-zA-Z$_0-9]*
JAVAFILE (?:[a-zA-Z$_0-9. -]+)
JAVASTACKTRACEPART at %{JAVACLASS:class}\.%{WORD:method}\(%{JAVAFILE:file}(?::%{NUMBER:line})?\)
"#;

/// The library as a map (user patterns added by the caller).
pub fn library() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in LIBRARY.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, def)) = line.split_once(' ') {
            m.insert(name.to_string(), def.to_string());
        }
    }
    m
}

/// A field a compiled pattern captures: its name (dots make it nested)
/// and how to type it.
#[derive(Debug, Clone)]
pub struct Capture {
    pub group: String,
    pub field: String,
    pub kind: Option<String>,
}

/// Expand `%{...}` in `pattern` into a regex; the captures in order.
pub fn compile(
    pattern: &str,
    library: &BTreeMap<String, String>,
) -> Result<(String, Vec<Capture>), String> {
    let mut captures = Vec::new();
    let re = expand(pattern, library, &mut captures, 0)?;
    Ok((re, captures))
}

fn expand(
    pattern: &str,
    library: &BTreeMap<String, String>,
    captures: &mut Vec<Capture>,
    depth: usize,
) -> Result<String, String> {
    if depth > 32 {
        return Err("patterns nest more than 32 deep (a pattern that names itself?)".into());
    }
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut rest = pattern;
    while let Some(i) = rest.find("%{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`%{{` without `}}` in `{pattern}`"))?;
        let spec = &after[..end];
        let mut parts = spec.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let field = parts.next().filter(|f| !f.is_empty());
        let kind = parts.next().map(str::to_string);
        if let Some(k) = &kind {
            if !matches!(k.as_str(), "int" | "float") {
                return Err(format!(
                    "`%{{{spec}}}`: the type is int or float, not `{k}`"
                ));
            }
        }
        let def = library
            .get(name)
            .ok_or_else(|| format!("no grok pattern named `{name}`"))?;
        let inner = expand(def, library, captures, depth + 1)?;
        match field {
            Some(f) => {
                let group = format!("g{}", captures.len());
                captures.push(Capture {
                    group: group.clone(),
                    field: f.to_string(),
                    kind,
                });
                out.push_str(&format!("(?P<{group}>{inner})"));
            }
            None => {
                out.push_str("(?:");
                out.push_str(&inner);
                out.push(')');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern of the library compiles, alone and named.
    #[test]
    fn the_whole_library_compiles() {
        let lib = library();
        assert!(lib.len() > 70, "{}", lib.len());
        for name in lib.keys() {
            let (re, _) = compile(&format!("%{{{name}:x}}"), &lib).unwrap();
            regex::Regex::new(&re).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn captures_are_named_and_typed() {
        let lib = library();
        let (re, caps) =
            compile("%{IP:client} %{NUMBER:bytes:int} %{GREEDYDATA:rest}", &lib).unwrap();
        let re = regex::Regex::new(&format!("^(?:{re})$")).unwrap();
        let m = re.captures("10.0.0.1 512 and the rest").unwrap();
        assert_eq!(&m[caps[0].group.as_str()], "10.0.0.1");
        assert_eq!(caps[1].kind.as_deref(), Some("int"));
        assert_eq!(&m[caps[2].group.as_str()], "and the rest");
        assert!(compile("%{NOPE}", &lib).unwrap_err().contains("NOPE"));
        let mut looped = lib.clone();
        looped.insert("A".into(), "%{A}".into());
        assert!(compile("%{A}", &looped).unwrap_err().contains("32 deep"));
    }
}
