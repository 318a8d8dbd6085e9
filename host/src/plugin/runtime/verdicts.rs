//! A plugin's packed verdicts: checked against its batch and outputs,
//! then read event by event.

use super::*;

/// A plugin's verdicts must describe exactly the batch it was given.
pub(crate) fn check_verdicts(
    v: &Verdicts,
    _data_len: usize,
    events: usize,
    outputs: usize,
) -> Result<(), CallError> {
    let bad = |message: String| {
        Err(CallError {
            kind: ErrorKind::InvalidOutput,
            message,
        })
    };
    if v.actions.len() != events {
        return bad(format!("{} actions for {events} events", v.actions.len()));
    }
    if !v.ports.is_empty() && v.ports.len() != events {
        return bad(format!("{} ports for {events} events", v.ports.len()));
    }
    if let Some(p) = v.ports.iter().find(|&&p| usize::from(p) > outputs) {
        return bad(format!(
            "port {p} but the plugin declared {outputs} outputs"
        ));
    }
    let mut replaced = 0;
    for &a in &v.actions {
        match a {
            action::DROP | action::KEEP => {}
            action::REPLACE | action::FAIL => replaced += 1,
            other => return bad(format!("unknown action {other}")),
        }
    }
    if replaced != v.ends.len() {
        return bad(format!(
            "{replaced} replaced or failed events but {} replacement offsets",
            v.ends.len()
        ));
    }
    let mut prev = 0u32;
    for &e in &v.ends {
        if e < prev || e as usize > v.data.len() {
            return bad(format!(
                "replacement offset {e} out of order or past {} bytes",
                v.data.len()
            ));
        }
        prev = e;
    }
    Ok(())
}

/// Each event's verdict, from verdicts [`check_verdicts`] accepted: its
/// action, its port and its entry of `data` (the new event of a
/// replacement, the reason of a dead letter; empty for the others).
pub fn verdicts(v: &Verdicts) -> impl Iterator<Item = (u8, u16, &[u8])> + '_ {
    let (mut start, mut next) = (0usize, 0usize);
    v.actions.iter().enumerate().map(move |(i, &a)| {
        let port = v.ports.get(i).copied().unwrap_or(0);
        let entry: &[u8] = if a == action::REPLACE || a == action::FAIL {
            let end = v.ends.get(next).map_or(start, |&e| e as usize);
            next += 1;
            let entry = v.data.get(start..end).unwrap_or_default();
            start = end;
            entry
        } else {
            &[]
        };
        (a, port, entry)
    })
}

/// Longest reason a plugin may give for one dead-lettered event.
pub(super) const MAX_REASON: usize = 4096;

/// A plugin's reason for dead-lettering an event, as text: invalid UTF-8
/// replaced, cut at [`MAX_REASON`] bytes (on a character boundary).
pub fn plugin_reason(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    if text.is_empty() {
        text.push_str("the plugin gave no reason");
    }
    text
}
