//! The plugins shipped inside the binary: `filter`, `route`, `mask`, `remap`,
//! `encrypt`.
//! A pipeline names them without a path: `plugin = "mask"`.

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The component bytes of a bundled plugin.
pub fn get(name: &str) -> Option<&'static [u8]> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

/// The names of the bundled plugins.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|(n, _)| *n)
}
