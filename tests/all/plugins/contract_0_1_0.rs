//! A plugin built for the first contract (`sluice:plugin@0.1.0`, without
//! action 3 or the `count` import) loads and runs on this host, alone and
//! in a pipeline.

use super::{load, process};
use crate::util::{counts, read_json_lines, run};
use crate::CONTRACT_0_1_0;

#[test]
fn a_plugin_of_the_first_contract_loads_and_runs() {
    let mut p = load(CONTRACT_0_1_0, "{}");
    assert!(
        p.version().starts_with("contract-0.1.0 "),
        "{}",
        p.version()
    );
    let v = process(&mut p, &[r#"{"a":1}"#, r#"{"drop":true}"#, r#"{"b":2}"#]);
    assert_eq!(v.actions, [1, 0, 1]);
    assert!(p.take_counts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_pipeline() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("in.log"),
        "{\"n\":1}\n{\"n\":2,\"drop\":1}\n{\"n\":3}\n",
    )
    .unwrap();
    let toml = format!(
        "[sources.in]\ntype = \"file\"\npath = \"in.log\"\nfollow = false\n\n[transforms.old]\nplugin = {}\ninputs = [\"in\"]\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"old\"]\n",
        crate::util::toml_path(CONTRACT_0_1_0)
    );
    let metrics = run(d.path(), &toml).await.unwrap();
    let out = read_json_lines(&d.path().join("out.log"));
    let n: Vec<u64> = out.iter().map(|e| e["n"].as_u64().unwrap()).collect();
    assert_eq!(n, [1, 3]);
    assert_eq!(counts(&metrics, "old").dropped, 1);
}
