//! The `remap` component: presets and steps through the real runtime.

use super::{load, process, replacements};
use crate::REMAP;

#[test]
fn python_logging_preset_through_the_component() {
    let mut p = load(
        REMAP,
        r#"{"preset":"python-logging","delete":["funcName"]}"#,
    );
    let v = process(
        &mut p,
        &[
            r#"{"name":"billing","msg":"stock low for sku %s owner %s","args":"('A-1', 'bob')","levelname":"WARNING","levelno":"30","created":"1795428000.5","funcName":"check"}"#,
            r#"{"already":"shaped","message":"m","level":"info"}"#,
        ],
    );
    assert_eq!(v.actions, [2, 1], "the shaped event passes unchanged");
    let out: serde_json::Value = serde_json::from_str(&replacements(&v)[0]).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"levelno":30,"created":1795428000.5,"message":"stock low for sku A-1 owner bob",
                           "level":"warn","logger":"billing","service":"billing"})
    );
}

#[test]
fn a_bad_config_names_its_key() {
    let e = crate::util::runtime()
        .load_file(
            "t",
            std::path::Path::new(REMAP),
            r#"{"coerce":{"x":"number"}}"#.into(),
            sluice::plugin::PluginLimits::default(),
        )
        .err()
        .expect("refused");
    assert!(e.to_string().contains("unknown variant `number`"), "{e}");
}
