//! The action codes of a plugin's verdicts (`Verdicts::actions` in
//! `wit/plugin.wit`): what the host does with each event of a batch. The
//! plugin SDK links this same file (`plugins/sdk/src/action.rs`), so the
//! two sides cannot disagree on a code.

/// Drop the event.
pub const DROP: u8 = 0;
/// Keep the event unchanged.
pub const KEEP: u8 = 1;
/// Replace the event with the next one in `Verdicts::data`.
pub const REPLACE: u8 = 2;
/// Send the event to the dead letters; the next entry in
/// `Verdicts::data` is the reason (UTF-8 text). The other events of
/// the batch go on, and the batch is not run again (hosts before it
/// took a `3` for a plugin bug and failed the batch).
pub const FAIL: u8 = 3;
