//! What a report reads: the files found under the paths, those of the
//! selected components (and only the newest `--files N` of each), and the
//! records that pass `--components`, `--level`, `--from/--to`, `--grep`.

use std::collections::BTreeMap;

use super::read::{self, level_rank, LogFile, ParseOptions, Record};
use super::Options;

/// Whether a record passes the filters.
pub(super) struct Filter {
    components: Vec<String>,
    min_rank: u8,
    from: Option<i64>,
    to: Option<i64>,
    grep: Option<String>,
}

impl Filter {
    pub(super) fn new(o: &Options) -> Self {
        Self {
            components: o.components.iter().map(|c| c.to_lowercase()).collect(),
            min_rank: o.min_level.as_deref().map_or(0, |l| level_rank(Some(l))),
            from: o.from,
            to: o.to,
            grep: o.grep.as_ref().map(|g| g.to_lowercase()),
        }
    }

    pub(super) fn component(&self, c: &str) -> bool {
        self.components.is_empty() || self.components.iter().any(|x| x.eq_ignore_ascii_case(c))
    }

    pub(super) fn keeps(&self, r: &Record) -> bool {
        self.component(r.component())
            && r.rank >= self.min_rank
            && self.from.is_none_or(|f| r.ts >= f)
            && self.to.is_none_or(|t| r.ts <= t)
            && self.grep.as_ref().is_none_or(|g| {
                r.message().to_lowercase().contains(g)
                    || r.fields().any(|(_, v)| v.to_lowercase().contains(g))
            })
    }
}

/// The files a report reads, after `--components` and `--files N`.
pub struct Inputs {
    pub files: Vec<LogFile>,
    pub scans: Vec<read::Scan>,
    pub selected: Vec<bool>,
}

/// Find and scan the input files.
pub fn inputs(o: &Options) -> anyhow::Result<Inputs> {
    let files = read::discover(&o.paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no log files (.log, .json, .jsonl, .ndjson, maybe .gz) under {}",
        o.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let popts = parse_options(o);
    let scans = read::scan_all(&files, &popts)?;
    // A component asked for that no file has is a typo, said as such.
    for want in &o.components {
        let known = |c: &str| c.eq_ignore_ascii_case(want);
        let found = scans
            .iter()
            .any(|s| s.components.iter().any(|(c, _)| known(c)))
            || files.iter().any(|f| known(&f.name_component));
        if !found {
            let mut all: Vec<String> = scans
                .iter()
                .flat_map(|s| s.components.iter().map(|(c, _)| c.clone()))
                .collect();
            all.sort();
            all.dedup();
            anyhow::bail!("unknown component `{want}` (known: {})", all.join(", "));
        }
    }
    let filter = Filter::new(o);
    let mut selected: Vec<bool> = scans
        .iter()
        .map(|s| s.components.is_empty() || s.components.iter().any(|(c, _)| filter.component(c)))
        .collect();
    if let Some(n) = o.newest_files {
        // A file belongs to the component most of its events have.
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, s) in scans.iter().enumerate() {
            let main = s
                .components
                .iter()
                .max_by_key(|(_, count)| *count)
                .map_or_else(|| files[i].name_component.clone(), |(c, _)| c.clone());
            groups.entry(main).or_default().push(i);
        }
        for members in groups.values_mut() {
            members.sort_by(|a, b| files[*b].modified.cmp(&files[*a].modified).then(b.cmp(a)));
            for &i in members.iter().skip(n) {
                selected[i] = false;
            }
        }
    }
    Ok(Inputs {
        files,
        scans,
        selected,
    })
}

pub(super) fn parse_options(o: &Options) -> ParseOptions {
    ParseOptions {
        component_by: o.component_by.clone(),
        correlate: o.correlate.clone(),
        fields: o.fields.clone(),
        identities: o.identities.clone(),
    }
}
