//! `encrypt`: field-level encryption. Each chosen field's value (its JSON
//! text, so numbers and objects come back as they were) becomes one age
//! file to the given recipients, in standard base64:
//!
//! ```toml
//! [transforms.seal]
//! plugin = "encrypt"
//! inputs = ["app"]
//! config = { fields = ["user.email", "card"], recipients = ["age1..."] }
//! ```
//!
//! Only public keys enter the plugin: it cannot read what it wrote.
//! `sluice decrypt-fields --identity key.txt` restores the fields of a
//! JSON-lines file; any age tool does too (`base64 -d | age -d -i key.txt`).
//! Events without the fields pass unchanged; `recipients` may also be one
//! string of keys separated by newlines (`"${file:keys.txt}"`).

use std::str::FromStr;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

/// What every encrypted value starts with (shared with `sluice
/// decrypt-fields` through `sluice_common::sealed`).
pub use sluice_common::sealed::{find, PREFIX};

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Fields to encrypt: names or dotted paths (`user.email`).
    fields: Vec<String>,
    /// The age recipients (`age1...` public keys): a list, or a text of
    /// one per line (`"${file:recipients.txt}"`).
    recipients: Recipients,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
enum Recipients {
    List(Vec<String>),
    Text(String),
}

pub struct Encrypt {
    fields: Vec<String>,
    recipients: Vec<age::x25519::Recipient>,
}

impl Encrypt {
    pub fn new(config: &str) -> Result<Self, String> {
        let s: Settings = serde_json::from_str(config).map_err(|e| format!("config: {e}"))?;
        if s.fields.is_empty() {
            return Err("config: `fields` is empty: name the fields to encrypt".into());
        }
        let entries: Vec<String> = match s.recipients {
            Recipients::List(l) => l,
            Recipients::Text(t) => t.lines().map(str::to_string).collect(),
        };
        let mut recipients = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let e = e.trim();
            if e.is_empty() || e.starts_with('#') {
                continue;
            }
            if e.starts_with("AGE-SECRET-KEY-") {
                return Err(format!(
                    "config: recipient {} is a secret key; give its public key (age-keygen -y)",
                    i + 1
                ));
            }
            recipients.push(age::x25519::Recipient::from_str(e).map_err(|err| {
                format!(
                    "config: recipient {} ({e:?}) is not an age1... key: {err}",
                    i + 1
                )
            })?);
        }
        if recipients.is_empty() {
            return Err(
                "config: `recipients` is empty: give at least one age1... public key".into(),
            );
        }
        Ok(Self {
            fields: s.fields,
            recipients,
        })
    }

    /// One value, sealed: base64 of an age file holding its JSON text.
    pub fn seal(&self, value: &Value) -> Result<String, String> {
        let encryptor = age::Encryptor::with_recipients(
            self.recipients.iter().map(|r| r as &dyn age::Recipient),
        )
        .map_err(|e| e.to_string())?;
        let text = value.to_string();
        let mut out = Vec::with_capacity(text.len() + 256);
        let mut w = encryptor.wrap_output(&mut out).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut w, text.as_bytes()).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub fn apply(&self, event: &Event<'_>) -> Verdict {
        if !self.fields.iter().any(|f| event.has(f)) {
            return Verdict::Keep;
        }
        let mut value = match event.to_value() {
            Ok(v) => v,
            Err(e) => return Verdict::Fail(format!("not a JSON object: {e}")),
        };
        for path in &self.fields {
            let Some(slot) = find(&mut value, path) else {
                continue;
            };
            // Already sealed (an event encrypted twice): leave it.
            if slot.as_str().is_some_and(|s| s.starts_with(PREFIX)) {
                continue;
            }
            match self.seal(slot) {
                Ok(sealed) => *slot = Value::String(sealed),
                Err(e) => return Verdict::Fail(format!("cannot encrypt {path}: {e}")),
            }
        }
        Verdict::Replace(value.to_string().into_bytes())
    }
}

impl Plugin for Encrypt {
    fn init(config: Config) -> Result<Self, String> {
        Self::new(config.as_str())
    }

    fn version(&self) -> String {
        concat!("encrypt ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        self.apply(event)
    }
}

export_plugin!(Encrypt);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::Settings>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Read;

    fn open(sealed: &str, id: &age::x25519::Identity) -> Value {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .unwrap();
        let d = age::Decryptor::new(&bytes[..]).unwrap();
        let mut text = String::new();
        d.decrypt(std::iter::once(id as &dyn age::Identity))
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn chosen_fields_are_sealed_and_come_back_as_they_were() {
        let id = age::x25519::Identity::generate();
        let config = serde_json::json!({
            "fields": ["user.email", "card", "absent"],
            "recipients": format!("# ops\n{}\n", id.to_public()),
        });
        let p = Encrypt::new(&config.to_string()).unwrap();
        let event = br#"{"message":"paid","card":4111111111111111,"user":{"email":"ann@example.com","id":7}}"#;
        let Verdict::Replace(out) = p.apply(&Event::new(event)) else {
            panic!("replaced")
        };
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], "paid");
        assert_eq!(v["user"]["id"], 7);
        let email = v["user"]["email"].as_str().unwrap();
        assert!(email.starts_with(PREFIX));
        assert!(!String::from_utf8_lossy(&out).contains("ann@example.com"));
        assert_eq!(open(email, &id), "ann@example.com");
        assert_eq!(open(v["card"].as_str().unwrap(), &id), 4111111111111111u64);
        // Without the fields: unchanged.
        assert!(matches!(
            p.apply(&Event::new(br#"{"message":"x"}"#)),
            Verdict::Keep
        ));
    }

    #[test]
    fn secret_keys_and_bad_keys_are_refused() {
        let id = age::x25519::Identity::generate();
        let secret = id.to_string();
        let c = serde_json::json!({"fields": ["a"], "recipients": [secret.expose_secret()]});
        let e = Encrypt::new(&c.to_string()).err().unwrap();
        assert!(
            e.contains("secret key") && !e.contains(secret.expose_secret()),
            "{e}"
        );
        let c = serde_json::json!({"fields": ["a"], "recipients": ["age1bad"]});
        assert!(Encrypt::new(&c.to_string())
            .err()
            .unwrap()
            .contains("recipient 1"));
        let c = serde_json::json!({"fields": [], "recipients": [id.to_public().to_string()]});
        assert!(Encrypt::new(&c.to_string()).is_err());
    }
}
