//! Dotted field paths: `data.user.id`. A key that holds a dot itself is
//! found first (`"a.b"` at the top level wins over `a` -> `b`).

use serde_json::{Map, Value};

/// The value at a dotted path.
pub fn get<'v>(obj: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match obj.get(head)? {
        Value::Object(inner) => get(inner, rest),
        _ => None,
    }
}

/// Take a field out by dotted path; an object left empty by it goes too.
pub fn take(obj: &mut Map<String, Value>, path: &str) -> Option<Value> {
    if let Some(v) = obj.remove(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    let Value::Object(inner) = obj.get_mut(head)? else {
        return None;
    };
    let v = take(inner, rest);
    if v.is_some() && inner.is_empty() {
        obj.remove(head);
    }
    v
}

/// Put a value at a dotted path, making the objects on the way (a
/// non-object in the way is replaced).
pub fn put(obj: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            obj.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let slot = obj
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            if let Value::Object(inner) = slot {
                put(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_both_ways() {
        let mut obj = json!({"a": {"b": 1}, "x.y": 2})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(get(&obj, "a.b"), Some(&json!(1)));
        assert_eq!(get(&obj, "x.y"), Some(&json!(2)));
        assert_eq!(take(&mut obj, "a.b"), Some(json!(1)));
        assert!(!obj.contains_key("a"), "an emptied object goes too");
        put(&mut obj, "c.d.e", json!(3));
        assert_eq!(get(&obj, "c.d.e"), Some(&json!(3)));
    }
}
