//! The pipeline as the live page draws it, and which components it may
//! show the events of (nothing upstream of a mask).

/// The pipeline as a graph for the live page: nodes (sources, transforms,
/// sinks, the dead letters when something reads them), with whether the
/// page may show their events, and edges from inputs.
pub fn graph(config: &crate::config::PipelineConfig) -> serde_json::Value {
    use serde_json::json;
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let base = |input: &str| input.split_once('.').map_or(input, |(n, _)| n).to_string();
    let port = |input: &str| input.split_once('.').map(|(_, p)| p.to_string());
    for s in &config.sources {
        nodes
            .push(json!({"name": s.name, "kind": "source", "tappable": tappable(config, &s.name)}));
    }
    let mut dead = false;
    for t in &config.transforms {
        nodes.push(
            json!({"name": t.name, "kind": "transform", "plugin": t.config.plugin.get_ref(),
                          "tappable": tappable(config, &t.name)}),
        );
        for i in &t.config.inputs {
            dead |= base(i.get_ref()) == crate::delivery::DEAD_LETTERS;
            edges.push(json!({"from": base(i.get_ref()), "port": port(i.get_ref()), "to": t.name}));
        }
    }
    for s in &config.sinks {
        nodes.push(json!({"name": s.name, "kind": "sink", "tappable": tappable(config, &s.name)}));
        for i in s.config.inputs() {
            dead |= base(i.get_ref()) == crate::delivery::DEAD_LETTERS;
            edges.push(json!({"from": base(i.get_ref()), "port": port(i.get_ref()), "to": s.name}));
        }
        if let Some(f) = s.config.fallback() {
            edges.push(json!({"from": s.name, "port": "fallback", "to": f.get_ref()}));
        }
    }
    if dead {
        nodes.push(
            json!({"name": crate::delivery::DEAD_LETTERS, "kind": "dead_letters",
                          "tappable": tappable(config, crate::delivery::DEAD_LETTERS)}),
        );
    }
    json!({"nodes": nodes, "edges": edges})
}

/// Whether the live page may show `name`'s events: when the pipeline masks
/// (a transform runs the `mask` plugin), only what has passed a mask.
pub fn tappable(config: &crate::config::PipelineConfig, name: &str) -> bool {
    let is_mask = |t: &crate::config::TransformConfig| {
        let p = t.plugin.get_ref();
        p == "mask"
            || std::path::Path::new(p)
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().contains("mask"))
    };
    if !config.transforms.iter().any(|t| is_mask(&t.config)) {
        return true;
    }
    fn masked(
        config: &crate::config::PipelineConfig,
        name: &str,
        is_mask: &dyn Fn(&crate::config::TransformConfig) -> bool,
        depth: usize,
    ) -> bool {
        if depth > 64 {
            return false;
        }
        let inputs: Vec<String> = if let Some(t) = config.transforms.iter().find(|t| t.name == name)
        {
            if is_mask(&t.config) {
                return true;
            }
            t.config
                .inputs
                .iter()
                .map(|i| i.get_ref().clone())
                .collect()
        } else if let Some(s) = config.sinks.iter().find(|s| s.name == name) {
            s.config
                .inputs()
                .iter()
                .map(|i| i.get_ref().clone())
                .collect()
        } else {
            // A source, or the dead letters (which hold events as they
            // failed, before any mask).
            return false;
        };
        !inputs.is_empty()
            && inputs.iter().all(|i| {
                let base = i.split_once('.').map_or(i.as_str(), |(n, _)| n);
                masked(config, base, is_mask, depth + 1)
            })
    }
    masked(config, name, &is_mask, 0)
}
