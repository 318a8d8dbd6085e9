//! Values sealed by the `encrypt` plugin: the mark they start with, and
//! where a configured field is in an event. The plugin seals with these;
//! `sluice decrypt-fields` finds and opens what it sealed with the same.

use serde_json::Value;

/// What every sealed value starts with: base64 of `age-encryption.org/v1`
/// (the start of an age file, whose bytes are the rest of the value).
pub const PREFIX: &str = "YWdlLWVuY3J5cHRpb24ub3JnL3Yx";

/// The value at `path`: the top-level key itself if there is one (a key
/// may hold dots), else down through nested objects, a dot at a time.
pub fn find<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if value.as_object()?.contains_key(path) {
        return value.as_object_mut()?.get_mut(path);
    }
    let mut at = value;
    for part in path.split('.') {
        at = at.as_object_mut()?.get_mut(part)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_with_dots_first_then_nested_fields() {
        let mut v = serde_json::json!({"user.email": 1, "user": {"email": 2, "ip": {"v4": 3}}});
        assert_eq!(find(&mut v, "user.email"), Some(&mut serde_json::json!(1)));
        assert_eq!(find(&mut v, "user.ip.v4"), Some(&mut serde_json::json!(3)));
        assert_eq!(find(&mut v, "user.name"), None);
        assert_eq!(find(&mut serde_json::json!([1]), "a"), None);
    }
}
