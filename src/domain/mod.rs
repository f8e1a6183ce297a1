//! The pure core of tminus: runbooks, people and roles, the state machine
//! of a deployment run, rotations, escalation and incidents. Nothing here does I/O, awaits, or reads the clock:
//! every function takes the current time and returns the new state plus what
//! happened, so it can be tested with plain values.

pub mod directory;
pub mod duration;
pub mod ids;
pub mod incident;
pub mod monitor;
pub mod oncall;
pub mod run;
pub mod runbook;

pub use directory::{Directory, Person, Role};
pub use duration::Dur;
pub use ids::{PersonId, Platform, RoleId, RunId};
pub use incident::{Incident, IncidentAction, IncidentEvent, IncidentRefusal, IncidentStatus};
pub use oncall::{Override, Policy, Rotation, Step, Target};
pub use run::{
    Action, CheckResult, Event, ItemReport, ItemState, Refusal, ReportStatus, Run, RunStatus,
    SignOff, Verdict, AUTOMATED_CHECK,
};
pub use runbook::{Gate, HttpCheck, Item, Phase, RoleQuorum, Rollback, Runbook, RunbookVersion};
