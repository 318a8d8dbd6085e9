//! The graph of a pipeline: resolving inputs to producer ports, checking
//! for unknown inputs and cycles.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ConfigError, PipelineConfig};
use crate::delivery::DEAD_LETTERS;

pub use crate::base::output::Port;

/// Resolve an input name (`gen`, `router`, `router.errors`) to a port.
pub fn resolve_input(
    config: &PipelineConfig,
    outputs: &BTreeMap<String, Vec<String>>,
    input: &str,
) -> Result<Port, String> {
    let (name, port) = match input.split_once('.') {
        Some((n, p)) => (n, Some(p)),
        None => (input, None),
    };
    if name == DEAD_LETTERS && port.is_none() {
        return Ok((name.to_string(), 0));
    }
    if config.sources.iter().any(|s| s.name == name) {
        return match port {
            None => Ok((name.to_string(), 0)),
            Some(p) => Err(format!(
                "source `{name}` has no output `{p}`; sources have one output"
            )),
        };
    }
    if let Some(outs) = outputs.get(name) {
        return match port {
            None | Some("default") => Ok((name.to_string(), 0)),
            Some(p) => match outs.iter().position(|o| o == p) {
                Some(i) => Ok((name.to_string(), i + 1)),
                None => Err(format!(
                    "transform `{name}` has no output `{p}` (its outputs: {})",
                    std::iter::once("default")
                        .chain(outs.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        };
    }
    let known: Vec<&str> = config
        .sources
        .iter()
        .map(|s| s.name.as_str())
        .chain(config.transforms.iter().map(|t| t.name.as_str()))
        .chain(std::iter::once(DEAD_LETTERS))
        .collect();
    Err(format!(
        "unknown input `{input}` (known: {})",
        known.join(", ")
    ))
}

/// Every consumer (transform or sink) with its inputs resolved.
pub fn edges(
    config: &PipelineConfig,
    outputs: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<(String, Vec<Port>)>, ConfigError> {
    let loc = &config.locator;
    let mut out = Vec::new();
    let consumers = config
        .transforms
        .iter()
        .map(|t| ("transforms", &t.name, t.config.inputs.as_slice()))
        .chain(
            config
                .sinks
                .iter()
                .map(|s| ("sinks", &s.name, s.config.inputs())),
        );
    for (section, name, inputs) in consumers {
        let key = format!("{section}.{name}.inputs");
        let is_fallback = config
            .sinks
            .iter()
            .any(|s| s.config.fallback().is_some_and(|f| f.get_ref() == name));
        if inputs.is_empty() && !is_fallback {
            return Err(loc.error(None, key, "needs at least one input"));
        }
        let mut ports = Vec::new();
        for input in inputs {
            let port = resolve_input(config, outputs, input.get_ref())
                .map_err(|m| loc.error(Some(input.span()), key.clone(), m))?;
            if section == "transforms" && port.0 == DEAD_LETTERS {
                return Err(loc.error(
                    Some(input.span()),
                    key,
                    "only sinks may read `_dead_letters` (a transform there could feed its own failures back)",
                ));
            }
            ports.push(port);
        }
        out.push((name.clone(), ports));
    }
    // A sink's fallback reads what that sink gives up on.
    for s in &config.sinks {
        let Some(f) = s.config.fallback() else {
            continue;
        };
        let key = format!("sinks.{}.fallback", s.name);
        let target = config.sinks.iter().find(|t| t.name == *f.get_ref());
        match target {
            None => {
                return Err(loc.error(
                    Some(f.span()),
                    key,
                    format!("unknown sink `{}`", f.get_ref()),
                ))
            }
            Some(t) if t.name == s.name => {
                return Err(loc.error(Some(f.span()), key, "a sink cannot be its own fallback"))
            }
            Some(t) if t.config.fallback().is_some() => {
                return Err(loc.error(
                    Some(f.span()),
                    key,
                    format!(
                        "`{}` has a fallback of its own; fallbacks do not chain",
                        t.name
                    ),
                ))
            }
            Some(t) => {
                if let Some((_, ports)) = out.iter_mut().find(|(n, _)| *n == t.name) {
                    ports.push((s.name.clone(), 0));
                }
            }
        }
    }
    Ok(out)
}

/// Check that every input exists and transforms form no cycle.
pub fn check(
    config: &PipelineConfig,
    outputs: &BTreeMap<String, Vec<String>>,
) -> Result<(), ConfigError> {
    let edges = edges(config, outputs)?;
    let deps: BTreeMap<&str, Vec<&str>> = edges
        .iter()
        .filter(|(n, _)| outputs.contains_key(n))
        .map(|(n, ports)| {
            let ins = ports
                .iter()
                .map(|(p, _)| p.as_str())
                .filter(|p| outputs.contains_key(*p))
                .collect();
            (n.as_str(), ins)
        })
        .collect();
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(i) = stack.iter().position(|s| *s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n);
        for d in deps.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, deps, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in deps.keys() {
        if let Some(cycle) = visit(n, &deps, &mut Vec::new(), &mut done) {
            let t = config
                .transforms
                .iter()
                .find(|t| t.name == cycle[0])
                .expect("transform");
            let span = t.config.inputs.first().map(|i| i.span());
            return Err(config.locator.error(
                span,
                format!("transforms.{}.inputs", cycle[0]),
                format!("cycle: {}", cycle.join(" -> ")),
            ));
        }
    }
    let read: BTreeSet<&Port> = edges.iter().flat_map(|(_, p)| p).collect();
    for s in &config.sources {
        if !read.contains(&(s.name.clone(), 0)) {
            tracing::warn!(source = %s.name, "no component reads this source; its events are discarded");
        }
    }
    Ok(())
}
