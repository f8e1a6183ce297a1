//! Message keys: the names under which tminus remembers the messages it
//! edits in place (a run's root message and phase cards, its monitoring card
//! and report, an incident's card and its page DMs). Once a platform gives a
//! message an id, later messages with the same key edit it. Making and
//! reading keys live together here, as button ids do in [`super::buttons`].

use crate::domain::{PersonId, RunId};

/// The run's root message in the deployments channel (its thread hangs from it).
pub fn root(run: RunId) -> String {
    format!("run:{run}:root")
}

/// The card of one phase of a run.
pub fn phase(run: RunId, phase: &str) -> String {
    format!("run:{run}:phase:{phase}")
}

/// The run's monitoring card, edited at every tick.
pub fn monitor(run: RunId) -> String {
    format!("run:{run}:monitor")
}

/// The report posted in the run's thread when it ends.
pub fn report(run: RunId) -> String {
    format!("run:{run}:report")
}

/// An incident's one card in the incidents channel.
pub fn incident(id: i64) -> String {
    format!("incident:{id}")
}

/// The direct message of one page: incident, climb, page number, person.
pub fn page(incident: i64, generation: u32, seq: u32, person: &PersonId) -> String {
    format!("incident:{incident}:page:{generation}:{seq}:{person}")
}

/// Part `i` of a card split over several messages (part 0 is the card's
/// own key), so each part is edited in place on its own.
pub fn part(key: &str, i: usize) -> String {
    if i == 0 {
        key.to_string()
    } else {
        format!("{key}#{i}")
    }
}

/// The run a run's key belongs to.
pub fn run_of(key: &str) -> Option<RunId> {
    let rest = key.strip_prefix("run:")?;
    let id = rest.split(':').next()?;
    Some(RunId(id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_keys_name_their_run_and_are_distinct() {
        let run = RunId(42);
        let keys = [root(run), phase(run, "pre"), monitor(run), report(run)];
        for k in &keys {
            assert_eq!(run_of(k), Some(run), "{k}");
        }
        let mut unique = keys.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(run_of(&incident(42)), None);
        assert_eq!(run_of("run:x:root"), None);
        assert_ne!(
            page(1, 0, 1, &PersonId::new("a")),
            page(1, 1, 1, &PersonId::new("a"))
        );
    }
}
