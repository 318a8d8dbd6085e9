//! A plugin's config schema, read from its component: the custom section
//! `sluice-config-schema` that `sluice_plugin::config_schema!` (or any
//! toolchain that can add a custom section) puts in it. Read by walking
//! the binary's sections (a component's, and those of the core modules it
//! nests), every length checked against what is left: nothing in the file
//! can make this read out of bounds or loop.

/// The custom section holding a plugin's config schema (JSON Schema).
pub const CONFIG_SCHEMA: &str = "sluice-config-schema";

/// How deep components and modules may nest here.
const MAX_NESTING: u32 = 8;

/// The contents of the first custom section called `name` in a wasm
/// module or component (or in a module or component nested in it).
pub fn custom_section<'a>(wasm: &'a [u8], name: &str) -> Option<&'a [u8]> {
    find(wasm, name, 0)
}

fn find<'a>(wasm: &'a [u8], name: &str, depth: u32) -> Option<&'a [u8]> {
    if depth > MAX_NESTING || wasm.get(..4)? != b"\0asm" {
        return None;
    }
    // The preamble: magic, then a version and a layer (a module's is 0, a
    // component's 1).
    let component = wasm.get(6..8)? == [1, 0];
    let mut rest = wasm.get(8..)?;
    while let Some((&id, after)) = rest.split_first() {
        let (size, after) = leb(after)?;
        let body = after.get(..size)?;
        rest = after.get(size..)?;
        match id {
            0 => {
                let (len, data) = leb(body)?;
                if data.get(..len)? == name.as_bytes() {
                    return data.get(len..);
                }
            }
            // A component's core module (1) or nested component (4).
            1 | 4 if component => {
                if let Some(found) = find(body, name, depth + 1) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// An unsigned LEB128 number (at most 32 bits, as wasm's sizes are) and
/// what follows it.
fn leb(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((usize::try_from(n).ok()?, bytes.get(i + 1..)?));
        }
    }
    None
}

/// `wasm` (a module or component) with a custom section `name` holding
/// `data` appended (custom sections may sit anywhere).
pub fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut body = Vec::with_capacity(name.len() + data.len() + 5);
    push_leb(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    wasm.push(0);
    push_leb(wasm, body.len());
    wasm.extend_from_slice(&body);
}

fn push_leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The config schema a plugin ships, as JSON, if it ships one that parses.
pub fn config_schema(wasm: &[u8]) -> Option<serde_json::Value> {
    let bytes = custom_section(wasm, CONFIG_SCHEMA)?;
    serde_json::from_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module of custom sections.
    fn module(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        for (name, data) in sections {
            let mut body = vec![name.len() as u8];
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(data);
            out.push(0);
            out.push(body.len() as u8);
            out.extend(body);
        }
        out
    }

    #[test]
    fn finds_a_section_in_a_module_and_in_a_component() {
        let m = module(&[("other", b"x"), (CONFIG_SCHEMA, b"{\"type\":\"object\"}")]);
        assert_eq!(
            custom_section(&m, CONFIG_SCHEMA),
            Some(&b"{\"type\":\"object\"}"[..])
        );
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        c.push(1);
        c.push(m.len() as u8);
        c.extend(&m);
        assert_eq!(
            config_schema(&c),
            Some(serde_json::json!({ "type": "object" }))
        );
        assert_eq!(custom_section(&c, "missing"), None);
    }

    #[test]
    fn an_appended_section_is_found() {
        let mut m = module(&[("other", b"x")]);
        let big = vec![b' '; 300]; // a size of two LEB128 bytes
        let mut data = b"{\"type\":\"object\"}".to_vec();
        data.extend(&big);
        append_custom_section(&mut m, CONFIG_SCHEMA, &data);
        assert_eq!(custom_section(&m, CONFIG_SCHEMA), Some(&data[..]));
    }

    #[test]
    fn a_cut_or_lying_file_is_none() {
        let m = module(&[(CONFIG_SCHEMA, b"{}")]);
        for cut in 0..m.len() - 1 {
            assert_eq!(custom_section(&m[..cut], CONFIG_SCHEMA), None, "{cut}");
        }
        let mut lying = m.clone();
        lying[9] = 0xff; // a section size past the end
        assert_eq!(custom_section(&lying, CONFIG_SCHEMA), None);
        assert_eq!(custom_section(b"not wasm", CONFIG_SCHEMA), None);
    }

    #[test]
    fn the_bundled_plugins_ship_their_schemas() {
        for name in crate::plugin::bundled::names() {
            let wasm = crate::plugin::bundled::get(name).unwrap();
            let schema = config_schema(wasm)
                .unwrap_or_else(|| panic!("bundled plugin `{name}` ships no config schema"));
            assert_eq!(schema["type"], "object", "{name}");
        }
    }
}
