//! Which of an event's fields holds its time: the rules tried in order,
//! read off a parsed event or off the raw values the event check caught.

use super::*;

/// What the candidates gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The event's time, with the fraction digits it had.
    Time(Stamp),
    /// A candidate is there but none parses.
    Unparsable,
    /// No candidate is there.
    Absent,
}

/// The event's time by `rules` (or the defaults).
pub fn find(rules: Option<&TimestampRules>, event: &serde_json::Map<String, Value>) -> Found {
    let rules = rules.map_or(defaults(), |r| r.rules());
    let mut seen = false;
    for r in rules {
        let Some(v) = sluice_common::get(event, &r.field) else {
            continue;
        };
        seen = true;
        if let Some(t) = parse_value(v, &r.format) {
            return Found::Time(t);
        }
    }
    if seen {
        Found::Unparsable
    } else {
        Found::Absent
    }
}

/// The candidates of a source, made ready for reading them off an event's
/// bytes in the pass that checks it: the values to catch (each candidate's
/// path, and a dotted path as one key too, which a key may be), and per
/// candidate which of them hold it.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub(super) rules: Vec<TimestampRule>,
    /// The values to catch.
    pub heads: Vec<crate::base::event::Head>,
    /// [`crate::base::scan::filter`] of `heads`.
    pub filter: u64,
    /// Per rule: (index in `heads` of the dotted path as one key, if
    /// dotted; index of the path itself).
    pub(super) paths: Vec<(Option<usize>, usize)>,
}

impl Candidates {
    pub fn new(rules: Option<&TimestampRules>) -> Candidates {
        use crate::base::event::Head;
        let rules: Vec<TimestampRule> = rules.map_or(defaults(), |r| r.rules()).to_vec();
        let mut heads: Vec<Head> = Vec::new();
        let mut index = |head: Head| match heads.iter().position(|h| *h == head) {
            Some(i) => i,
            None => {
                heads.push(head);
                heads.len() - 1
            }
        };
        let paths = rules
            .iter()
            .map(|r| {
                let whole = Head {
                    key: r.field.clone(),
                    rest: None,
                };
                match r.field.split_once('.') {
                    None => (None, index(whole)),
                    Some((key, rest)) => (
                        Some(index(whole)),
                        index(Head {
                            key: key.to_string(),
                            rest: Some(rest.to_string()),
                        }),
                    ),
                }
            })
            .collect();
        Candidates {
            rules,
            filter: crate::base::scan::filter(&heads),
            heads,
            paths,
        }
    }

    /// The time from the raw values caught for `heads` (by index).
    pub fn find(&self, caught: &[Option<&str>]) -> Found {
        let mut seen = false;
        let at = |i: usize| caught.get(i).copied().flatten();
        for (rule, (whole, path)) in self.rules.iter().zip(&self.paths) {
            let Some(v) = whole.and_then(at).or_else(|| at(*path)) else {
                continue;
            };
            seen = true;
            if let Some(t) = parse_json(v, &rule.format) {
                return Found::Time(t);
            }
        }
        if seen {
            Found::Unparsable
        } else {
            Found::Absent
        }
    }
}
