//! The `encrypt` component: fields sealed with age for public keys, and
//! `sluice decrypt-fields` restoring them.

use std::process::Command;

use serde_json::{json, Value};

use super::{load, process, replacements};
use crate::encryption::keygen;
use crate::util::{run, write_json_lines};
use crate::ENCRYPT;

#[test]
fn the_component_seals_only_the_chosen_fields() {
    let d = tempfile::tempdir().unwrap();
    let (_, public) = keygen(d.path(), "key");
    let mut p = load(
        ENCRYPT,
        &json!({"fields": ["secret"], "recipients": [public]}).to_string(),
    );
    let v = process(&mut p, &[r#"{"secret":"s3"}"#, r#"{"other":1}"#]);
    assert_eq!(v.actions, [2, 1], "replaced, then kept as it is");
    let out: Value = serde_json::from_str(&replacements(&v)[0]).unwrap();
    assert!(out["secret"]
        .as_str()
        .unwrap()
        .starts_with("YWdlLWVuY3J5cHRpb24ub3JnL3Yx"));
    let e = crate::util::runtime()
        .load_file(
            "test",
            std::path::Path::new(ENCRYPT),
            r#"{"fields":["a"],"recipients":["age1nope"]}"#.to_string(),
            sluice::plugin::PluginLimits::default(),
        )
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("recipient 1"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_encrypt_plugin_seals_fields_and_decrypt_fields_restores_them() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    let (stranger, _) = keygen(d.path(), "stranger");
    let events: Vec<Value> = (0..200)
        .map(|i| {
            json!({"timestamp": "2026-12-01T00:00:00Z", "message": format!("paid {i}"), "card": 4111111111111111u64 + i,
                   "user": {"email": format!("u{i}@example.com"), "id": i}})
        })
        .collect();
    write_json_lines(&d.path().join("in.jsonl"), &events);
    let toml = format!(
        r#"
[sources.app]
type = "file"
path = "in.jsonl"

[transforms.seal]
plugin = "encrypt"
inputs = ["app"]
config = {{ fields = ["user.email", "card"], recipients = ["{public}"] }}

[sinks.out]
type = "file"
path = "sealed.log"
inputs = ["seal"]
"#
    );
    run(d.path(), &toml).await.unwrap();
    let sealed = std::fs::read_to_string(d.path().join("sealed.log")).unwrap();
    assert!(!sealed.contains("@example.com") && !sealed.contains("4111111111111"));
    let first: Value = serde_json::from_str(sealed.lines().next().unwrap()).unwrap();
    assert_eq!(first["message"], "paid 0");
    assert_eq!(first["user"]["id"], 0);
    // Any age tool opens a value.
    let value = first["user"]["email"].as_str().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "echo {value} | base64 -d | age -d -i {}",
            key.display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"u0@example.com\"");
    // decrypt-fields restores the file.
    let out = crate::util::sluice()
        .args(["decrypt-fields", "--identity"])
        .arg(&key)
        .arg(d.path().join("sealed.log"))
        .arg("-o")
        .arg(d.path().join("restored.log"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = crate::util::read_json_lines(&d.path().join("restored.log"));
    assert_eq!(restored, events);
    // With another key: left as they are, and said so.
    let out = crate::util::sluice()
        .args(["decrypt-fields", "--identity"])
        .arg(&stranger)
        .arg("--fields")
        .arg("card")
        .arg(d.path().join("sealed.log"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1: card:") && err.contains("200 field(s) could not"),
        "{err}"
    );
}
