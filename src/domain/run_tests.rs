//! Unit tests of the run state machine: every action, its events, the state
//! it leaves behind and every refusal, on a small hand-built runbook.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::domain::runbook::{Gate, Item, Phase, RoleQuorum, Rollback, Runbook};
use crate::domain::{Directory, Person, PersonId, Platform, Role, RoleId, RunId};

// ---------------------------------------------------------------- fixtures

const BASE: &str = "2026-11-23T10:00:00Z";

fn base() -> DateTime<Utc> {
    BASE.parse::<DateTime<Utc>>().unwrap()
}

/// `minutes` after the base time.
fn at(minutes: i64) -> DateTime<Utc> {
    base() + Duration::minutes(minutes)
}

fn p(id: &str) -> PersonId {
    PersonId::new(id)
}

fn r(id: &str) -> RoleId {
    RoleId::new(id)
}

fn item(id: &str, text: &str, optional: bool, production_deploy: bool) -> Item {
    Item {
        id: id.to_string(),
        text: text.to_string(),
        optional,
        check: None,
        production_deploy,
        pipeline: None,
    }
}

fn quorum(role: &str, quorum: u32) -> RoleQuorum {
    RoleQuorum {
        role: r(role),
        quorum,
    }
}

/// pre (tests, changelog required; announce optional; Developer 1 + QA 2),
/// prod (deploy = production deploy; four-eyes DevOps 1),
/// verify (health; no gate),
/// rollback phase "rollback" (revert) for DevOps; DevOps may abort.
fn runbook() -> Runbook {
    Runbook {
        id: "web-service".to_string(),
        name: "Web service".to_string(),
        description: "Deploy a web service".to_string(),
        phases: vec![
            Phase {
                id: "pre".to_string(),
                title: "Pre-deployment".to_string(),
                items: vec![
                    item("tests", "Run the test suite", false, false),
                    item("changelog", "Update the changelog", false, false),
                    item("announce", "Announce in #general", true, false),
                ],
                gate: Gate {
                    signoffs: vec![quorum("developer", 1), quorum("qa", 2)],
                    four_eyes: false,
                },
            },
            Phase {
                id: "prod".to_string(),
                title: "Production".to_string(),
                items: vec![item("deploy", "Deploy to production", false, true)],
                gate: Gate {
                    signoffs: vec![quorum("devops", 1)],
                    four_eyes: true,
                },
            },
            Phase {
                id: "verify".to_string(),
                title: "Verification".to_string(),
                items: vec![item("health", "Check the health endpoint", false, false)],
                gate: Gate::default(),
            },
        ],
        rollback: Some(Rollback {
            roles: vec![r("devops")],
            phase: Phase {
                id: "rollback".to_string(),
                title: "Roll back".to_string(),
                items: vec![item(
                    "revert",
                    "Revert to the previous version",
                    false,
                    false,
                )],
                gate: Gate::default(),
            },
        }),
        abort_roles: vec![r("devops")],
        signoff_reminder: None,
        monitoring: None,
        escalation: None,
        version: Default::default(),
    }
}

fn runbook_without_rollback() -> Runbook {
    Runbook {
        rollback: None,
        ..runbook()
    }
}

fn person(id: &str, name: &str) -> (PersonId, Person) {
    (
        p(id),
        Person {
            id: p(id),
            name: name.to_string(),
            slack: None,
            discord: None,
        },
    )
}

fn role(id: &str, name: &str, members: &[&str]) -> (RoleId, Role) {
    (
        r(id),
        Role {
            id: r(id),
            name: name.to_string(),
            members: members.iter().map(|m| p(m)).collect(),
        },
    )
}

/// alice (developer, devops), bob (qa), carol (qa), dan (devops), erin (none).
fn directory() -> Directory {
    Directory {
        people: BTreeMap::from([
            person("alice", "Alice"),
            person("bob", "Bob"),
            person("carol", "Carol"),
            person("dan", "Dan"),
            person("erin", "Erin"),
        ]),
        roles: BTreeMap::from([
            role("developer", "Developer", &["alice"]),
            role("devops", "DevOps", &["alice", "dan"]),
            role("qa", "QA", &["bob", "carol"]),
        ]),
    }
}

// ------------------------------------------------------------ action helpers

fn done(phase: &str, item: &str) -> Action {
    Action::ItemDone {
        phase: phase.to_string(),
        item: item.to_string(),
    }
}

fn undo(phase: &str, item: &str) -> Action {
    Action::ItemUndo {
        phase: phase.to_string(),
        item: item.to_string(),
    }
}

fn na(phase: &str, item: &str, reason: Option<&str>) -> Action {
    Action::ItemNotApplicable {
        phase: phase.to_string(),
        item: item.to_string(),
        reason: reason.map(str::to_string),
    }
}

fn sign(phase: &str, role: &str) -> Action {
    Action::SignOff {
        phase: phase.to_string(),
        role: r(role),
    }
}

fn reject(phase: &str, role: &str, reason: Option<&str>) -> Action {
    Action::Reject {
        phase: phase.to_string(),
        role: r(role),
        reason: reason.map(str::to_string),
    }
}

fn advance(phase: &str) -> Action {
    Action::Advance {
        phase: phase.to_string(),
    }
}

fn abort(reason: Option<&str>) -> Action {
    Action::Abort {
        reason: reason.map(str::to_string),
    }
}

fn rollback(reason: Option<&str>) -> Action {
    Action::Rollback {
        reason: reason.map(str::to_string),
    }
}

// ----------------------------------------------------------------- events

fn ev_done(phase: &str, item: &str) -> Event {
    Event::ItemDone {
        phase: phase.to_string(),
        item: item.to_string(),
    }
}

fn ev_undone(phase: &str, item: &str) -> Event {
    Event::ItemUndone {
        phase: phase.to_string(),
        item: item.to_string(),
    }
}

fn ev_signed(phase: &str, role: &str) -> Event {
    Event::SignedOff {
        phase: phase.to_string(),
        role: r(role),
    }
}

fn ev_rejected(phase: &str, role: &str, reason: &str) -> Event {
    Event::Rejected {
        phase: phase.to_string(),
        role: r(role),
        reason: reason.to_string(),
    }
}

fn ev_entered(from: &str, to: &str) -> Event {
    Event::PhaseEntered {
        from: from.to_string(),
        to: to.to_string(),
    }
}

// ---------------------------------------------------------------- harness

/// A run with its runbook and directory, and the clock its actions use.
struct H {
    rb: Runbook,
    dir: Directory,
    run: Run,
    now: DateTime<Utc>,
}

impl H {
    /// A run started by `starter` at the base time; actions happen at +1 min
    /// unless `now` is moved.
    fn started_by(starter: &str) -> H {
        H::with(runbook(), starter)
    }

    fn with(rb: Runbook, starter: &str) -> H {
        let mut run = Run::start(
            &rb,
            Platform::Shell,
            "C-deploys",
            "payments-api",
            "v2.4.0",
            "production",
            &p(starter),
            base(),
        );
        run.number = 42;
        H {
            rb,
            dir: directory(),
            run,
            now: at(1),
        }
    }

    fn act(&mut self, who: &str, action: Action) -> Result<Vec<Event>, Refusal> {
        self.run
            .decide(&self.rb, &self.dir, &p(who), action, self.now)
    }

    /// Performs an action that must succeed and returns its events.
    fn ok(&mut self, who: &str, action: Action) -> Vec<Event> {
        let shown = format!("{action:?}");
        match self.act(who, action) {
            Ok(events) => events,
            Err(refusal) => panic!("{who} {shown} refused: {refusal}"),
        }
    }

    /// Performs an action that must be refused, checks that the run did not
    /// change, and returns the refusal.
    fn refused(&mut self, who: &str, action: Action) -> Refusal {
        let before = self.run.clone();
        let shown = format!("{action:?}");
        match self.act(who, action) {
            Ok(events) => panic!("{who} {shown} succeeded with {events:?}"),
            Err(refusal) => {
                assert_eq!(self.run, before, "a refused action changed the run");
                refusal
            }
        }
    }

    /// Performs an action that must succeed with no events and no change.
    fn noop(&mut self, who: &str, action: Action) {
        let before = self.run.clone();
        let shown = format!("{action:?}");
        let events = self.ok(who, action);
        assert!(events.is_empty(), "{who} {shown} gave {events:?}");
        assert_eq!(self.run, before, "a no-op changed the run");
    }

    fn unmet(&self) -> Vec<String> {
        self.run.unmet(&self.rb, &self.dir)
    }

    fn phase_def(&self, id: &str) -> Phase {
        self.rb.phase(id).unwrap().clone()
    }

    /// Satisfies the pre phase (items by alice, Developer by alice, QA by bob
    /// and carol) without advancing.
    fn satisfy_pre(&mut self) {
        self.ok("alice", done("pre", "tests"));
        self.ok("alice", done("pre", "changelog"));
        self.ok("alice", sign("pre", "developer"));
        self.ok("bob", sign("pre", "qa"));
        self.ok("carol", sign("pre", "qa"));
    }

    /// Into the prod phase.
    fn reach_prod(&mut self) {
        self.satisfy_pre();
        assert_eq!(
            self.ok("alice", advance("pre")),
            vec![ev_entered("pre", "prod")]
        );
    }

    /// Into the verify phase, deploy done and dan's DevOps sign-off.
    fn reach_verify(&mut self) {
        self.reach_prod();
        self.ok("alice", done("prod", "deploy"));
        self.ok("dan", sign("prod", "devops"));
        assert_eq!(
            self.ok("alice", advance("prod")),
            vec![ev_entered("prod", "verify")]
        );
    }
}

// ------------------------------------------------------------------ start

#[test]
fn start_enters_the_first_phase_with_nothing_done() {
    let rb = runbook();
    let run = Run::start(
        &rb,
        Platform::Slack,
        "C123",
        "payments-api",
        "v2.4.0",
        "production",
        &p("alice"),
        base(),
    );
    assert_eq!(run.id, RunId(0));
    assert_eq!(run.number, 0);
    assert_eq!(run.platform, Platform::Slack);
    assert_eq!(run.channel, "C123");
    assert_eq!(run.service, "payments-api");
    assert_eq!(run.version, "v2.4.0");
    assert_eq!(run.env, "production");
    assert_eq!(run.runbook, "web-service");
    assert_eq!(run.started_by, p("alice"));
    assert_eq!(run.started_at, base());
    assert_eq!(run.status, RunStatus::Active);
    assert_eq!(run.phase, "pre");
    assert_eq!(run.phase_entered_at, base());
    assert_eq!(run.t0, None);
    assert_eq!(run.ended_at, None);
    assert_eq!(run.end_reason, None);
    assert!(run.items.is_empty());
    assert!(run.signoffs.is_empty());
    for phase in rb.all_phases() {
        for it in &phase.items {
            assert_eq!(run.item_state(&phase.id, &it.id), &ItemState::Pending);
        }
    }
}

// ------------------------------------------------------------------ items

#[test]
fn item_done_records_who_and_when() {
    let mut h = H::started_by("alice");
    h.now = at(3);
    assert_eq!(
        h.ok("bob", done("pre", "tests")),
        vec![ev_done("pre", "tests")]
    );
    assert_eq!(
        h.run.item_state("pre", "tests"),
        &ItemState::Done {
            by: p("bob"),
            at: at(3)
        }
    );
    assert_eq!(h.run.items.len(), 1);
    assert_eq!(h.run.item_state("pre", "changelog"), &ItemState::Pending);
    assert_eq!(h.run.t0, None, "an ordinary item does not set T0");
    assert_eq!(h.run.phase, "pre");
    assert_eq!(h.run.status, RunStatus::Active);
}

#[test]
fn item_done_twice_is_a_noop_and_keeps_the_first_click() {
    let mut h = H::started_by("alice");
    h.ok("bob", done("pre", "tests"));
    h.now = at(9);
    h.noop("carol", done("pre", "tests"));
    assert_eq!(
        h.run.item_state("pre", "tests"),
        &ItemState::Done {
            by: p("bob"),
            at: at(1)
        }
    );
}

#[test]
fn anyone_may_tick_items_even_without_a_role() {
    let mut h = H::started_by("alice");
    assert_eq!(
        h.ok("erin", done("pre", "tests")),
        vec![ev_done("pre", "tests")]
    );
    // Even someone not in the directory at all.
    assert_eq!(
        h.ok("zed", done("pre", "changelog")),
        vec![ev_done("pre", "changelog")]
    );
}

#[test]
fn item_undo_returns_it_to_pending() {
    let mut h = H::started_by("alice");
    h.ok("bob", done("pre", "tests"));
    assert_eq!(
        h.ok("carol", undo("pre", "tests")),
        vec![ev_undone("pre", "tests")]
    );
    assert_eq!(h.run.item_state("pre", "tests"), &ItemState::Pending);
    assert!(h.run.items.is_empty());
}

#[test]
fn item_undo_of_a_pending_item_is_a_noop() {
    let mut h = H::started_by("alice");
    h.noop("bob", undo("pre", "tests"));
    h.ok("bob", done("pre", "tests"));
    h.ok("bob", undo("pre", "tests"));
    h.noop("bob", undo("pre", "tests"));
}

#[test]
fn item_undo_of_a_not_applicable_item_clears_it() {
    let mut h = H::started_by("alice");
    h.ok("bob", na("pre", "announce", Some("internal release")));
    assert_eq!(
        h.ok("bob", undo("pre", "announce")),
        vec![ev_undone("pre", "announce")]
    );
    assert_eq!(h.run.item_state("pre", "announce"), &ItemState::Pending);
}

#[test]
fn optional_item_can_be_marked_not_applicable_with_a_trimmed_reason() {
    let mut h = H::started_by("alice");
    h.now = at(4);
    let events = h.ok("bob", na("pre", "announce", Some("  internal release \n")));
    assert_eq!(
        events,
        vec![Event::ItemNotApplicable {
            phase: "pre".to_string(),
            item: "announce".to_string(),
            reason: "internal release".to_string(),
        }]
    );
    assert_eq!(
        h.run.item_state("pre", "announce"),
        &ItemState::NotApplicable {
            by: p("bob"),
            at: at(4),
            reason: "internal release".to_string(),
        }
    );
}

#[test]
fn not_applicable_with_the_same_reason_twice_is_a_noop() {
    let mut h = H::started_by("alice");
    h.ok("bob", na("pre", "announce", Some("internal release")));
    h.now = at(5);
    h.noop("carol", na("pre", "announce", Some("internal release")));
    // Same reason once trimmed is the same reason.
    h.noop("carol", na("pre", "announce", Some(" internal release ")));
}

#[test]
fn not_applicable_with_another_reason_replaces_the_first() {
    let mut h = H::started_by("alice");
    h.ok("bob", na("pre", "announce", Some("internal release")));
    h.now = at(5);
    let events = h.ok("carol", na("pre", "announce", Some("hotfix")));
    assert_eq!(
        events,
        vec![Event::ItemNotApplicable {
            phase: "pre".to_string(),
            item: "announce".to_string(),
            reason: "hotfix".to_string(),
        }]
    );
    assert_eq!(
        h.run.item_state("pre", "announce"),
        &ItemState::NotApplicable {
            by: p("carol"),
            at: at(5),
            reason: "hotfix".to_string(),
        }
    );
}

#[test]
fn done_and_not_applicable_replace_each_other() {
    let mut h = H::started_by("alice");
    h.ok("bob", done("pre", "announce"));
    h.ok("bob", na("pre", "announce", Some("skipped")));
    assert!(matches!(
        h.run.item_state("pre", "announce"),
        ItemState::NotApplicable { .. }
    ));
    assert_eq!(
        h.ok("bob", done("pre", "announce")),
        vec![ev_done("pre", "announce")]
    );
    assert!(matches!(
        h.run.item_state("pre", "announce"),
        ItemState::Done { .. }
    ));
}

#[test]
fn not_applicable_refuses_required_items() {
    let mut h = H::started_by("alice");
    let refusal = h.refused("bob", na("pre", "tests", Some("no time")));
    assert_eq!(
        refusal,
        Refusal::RequiredItem("Run the test suite".to_string())
    );
    assert_eq!(
        refusal.to_string(),
        "\"Run the test suite\" is required; only optional items can be marked not applicable"
    );
    // Required is checked before the reason.
    assert_eq!(
        h.refused("bob", na("pre", "tests", None)),
        Refusal::RequiredItem("Run the test suite".to_string())
    );
}

#[test]
fn not_applicable_needs_a_reason() {
    let mut h = H::started_by("alice");
    for reason in [None, Some(""), Some("   "), Some(" \t\n ")] {
        let refusal = h.refused("bob", na("pre", "announce", reason));
        assert_eq!(
            refusal,
            Refusal::ReasonRequired("marking an item not applicable")
        );
        assert_eq!(
            refusal.to_string(),
            "marking an item not applicable needs a reason"
        );
    }
    assert_eq!(h.run.item_state("pre", "announce"), &ItemState::Pending);
}

#[test]
fn items_of_another_phase_are_refused() {
    let mut h = H::started_by("alice");
    // A phase ahead.
    let refusal = h.refused("alice", done("prod", "deploy"));
    assert_eq!(
        refusal,
        Refusal::NotCurrentPhase {
            phase: "prod".to_string(),
            current: "pre".to_string()
        }
    );
    assert_eq!(
        refusal.to_string(),
        "that button belongs to phase \"prod\", but the run is now in \"pre\""
    );
    assert!(matches!(
        h.refused("alice", undo("prod", "deploy")),
        Refusal::NotCurrentPhase { .. }
    ));
    assert!(matches!(
        h.refused("alice", na("verify", "health", Some("x"))),
        Refusal::NotCurrentPhase { .. }
    ));
    // The rollback phase while not rolling back.
    assert!(matches!(
        h.refused("alice", done("rollback", "revert")),
        Refusal::NotCurrentPhase { .. }
    ));

    // A phase already left.
    h.reach_prod();
    let not_current = Refusal::NotCurrentPhase {
        phase: "pre".to_string(),
        current: "prod".to_string(),
    };
    assert_eq!(h.refused("bob", done("pre", "announce")), not_current);
    assert_eq!(h.refused("bob", undo("pre", "tests")), not_current);
    assert_eq!(
        h.refused("bob", na("pre", "announce", Some("late"))),
        not_current
    );
}

#[test]
fn unknown_phases_and_items_are_refused() {
    let mut h = H::started_by("alice");
    let refusal = h.refused("alice", done("staging", "tests"));
    assert_eq!(refusal, Refusal::UnknownPhase("staging".to_string()));
    assert_eq!(refusal.to_string(), "this runbook has no phase \"staging\"");
    assert_eq!(
        h.refused("alice", undo("staging", "tests")),
        Refusal::UnknownPhase("staging".to_string())
    );
    assert_eq!(
        h.refused("alice", na("staging", "tests", Some("x"))),
        Refusal::UnknownPhase("staging".to_string())
    );

    let unknown_item = Refusal::UnknownItem {
        phase: "pre".to_string(),
        item: "lint".to_string(),
    };
    assert_eq!(h.refused("alice", done("pre", "lint")), unknown_item);
    assert_eq!(h.refused("alice", undo("pre", "lint")), unknown_item);
    assert_eq!(
        h.refused("alice", na("pre", "lint", Some("x"))),
        unknown_item
    );
    assert_eq!(
        unknown_item.to_string(),
        "phase \"pre\" has no item \"lint\""
    );

    // An item that exists in another phase is unknown in this one.
    assert_eq!(
        h.refused("alice", done("pre", "deploy")),
        Refusal::UnknownItem {
            phase: "pre".to_string(),
            item: "deploy".to_string()
        }
    );
}

#[test]
fn unknown_phase_is_reported_before_not_current_and_not_current_before_unknown_item() {
    let mut h = H::started_by("alice");
    assert_eq!(
        h.refused("alice", done("nope", "nope")),
        Refusal::UnknownPhase("nope".to_string())
    );
    assert_eq!(
        h.refused("alice", done("prod", "nope")),
        Refusal::NotCurrentPhase {
            phase: "prod".to_string(),
            current: "pre".to_string()
        }
    );
}

// -------------------------------------------------------- production deploy

#[test]
fn production_deploy_sets_t0_and_is_announced_once() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.now = at(20);
    assert_eq!(
        h.ok("dan", done("prod", "deploy")),
        vec![ev_done("prod", "deploy"), Event::ProductionDeployed]
    );
    assert_eq!(h.run.t0, Some(at(20)));
    // A second click changes nothing: no second ProductionDeployed, T0 kept.
    h.now = at(21);
    h.noop("alice", done("prod", "deploy"));
    assert_eq!(h.run.t0, Some(at(20)));
}

#[test]
fn undoing_the_production_deploy_clears_t0_and_redoing_sets_it_again() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.now = at(20);
    h.ok("dan", done("prod", "deploy"));
    h.now = at(22);
    assert_eq!(
        h.ok("dan", undo("prod", "deploy")),
        vec![ev_undone("prod", "deploy")]
    );
    assert_eq!(h.run.t0, None);
    assert_eq!(h.run.item_state("prod", "deploy"), &ItemState::Pending);
    h.now = at(30);
    assert_eq!(
        h.ok("dan", done("prod", "deploy")),
        vec![ev_done("prod", "deploy"), Event::ProductionDeployed]
    );
    assert_eq!(h.run.t0, Some(at(30)));
}

#[test]
fn undoing_an_ordinary_item_keeps_t0() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    let t0 = h.run.t0;
    assert!(t0.is_some());
    h.ok("alice", done("verify", "health"));
    h.ok("alice", undo("verify", "health"));
    assert_eq!(h.run.t0, t0);
}

#[test]
fn t0_survives_leaving_the_production_phase() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.now = at(20);
    h.ok("dan", done("prod", "deploy"));
    h.ok("dan", sign("prod", "devops"));
    h.now = at(25);
    h.ok("dan", advance("prod"));
    assert_eq!(h.run.t0, Some(at(20)));
    // And the deploy can no longer be undone from the old card.
    assert!(matches!(
        h.refused("dan", undo("prod", "deploy")),
        Refusal::NotCurrentPhase { .. }
    ));
}

// --------------------------------------------------------------- sign-offs

#[test]
fn a_member_signs_off() {
    let mut h = H::started_by("alice");
    h.now = at(6);
    assert_eq!(h.ok("bob", sign("pre", "qa")), vec![ev_signed("pre", "qa")]);
    assert_eq!(
        h.run.signoffs,
        vec![SignOff {
            phase: "pre".to_string(),
            role: r("qa"),
            person: p("bob"),
            verdict: Verdict::Approved,
            at: at(6),
        }]
    );
}

#[test]
fn a_non_member_is_told_who_can_sign() {
    let mut h = H::started_by("alice");
    for who in ["alice", "dan", "erin", "zed"] {
        let refusal = h.refused(who, sign("pre", "qa"));
        assert_eq!(
            refusal,
            Refusal::NotInRole {
                role: "QA".to_string(),
                members: vec!["Bob".to_string(), "Carol".to_string()],
            }
        );
        let msg = refusal.to_string();
        assert!(msg.contains("Bob") && msg.contains("Carol"), "{msg}");
        assert_eq!(
            msg,
            "only members of QA can sign off for it; ask Bob or Carol"
        );
    }
    // A one-member role.
    let refusal = h.refused("bob", sign("pre", "developer"));
    assert_eq!(
        refusal.to_string(),
        "only members of Developer can sign off for it; ask Alice"
    );
    // Rejecting is gated the same way, before the reason is looked at.
    assert_eq!(
        h.refused("erin", reject("pre", "qa", None)),
        Refusal::NotInRole {
            role: "QA".to_string(),
            members: vec!["Bob".to_string(), "Carol".to_string()],
        }
    );
}

#[test]
fn not_in_role_message_lists_three_or_more_and_none() {
    let three = Refusal::NotInRole {
        role: "QA".to_string(),
        members: vec!["Bob".to_string(), "Carol".to_string(), "Erin".to_string()],
    };
    assert_eq!(
        three.to_string(),
        "only members of QA can sign off for it; ask Bob, Carol or Erin"
    );
    let none = Refusal::NotInRole {
        role: "QA".to_string(),
        members: vec![],
    };
    assert_eq!(
        none.to_string(),
        "only members of QA can sign off for it; ask an administrator to add members to the role"
    );
}

#[test]
fn a_role_the_gate_does_not_name_is_refused() {
    let mut h = H::started_by("alice");
    let refusal = h.refused("alice", sign("pre", "devops"));
    assert_eq!(
        refusal,
        Refusal::RoleNotInGate {
            phase: "Pre-deployment".to_string(),
            role: "DevOps".to_string(),
        }
    );
    assert_eq!(
        refusal.to_string(),
        "phase \"Pre-deployment\" does not ask DevOps to sign off"
    );
    // A role unknown to the directory reads as its key.
    assert_eq!(
        h.refused("alice", sign("pre", "sre")),
        Refusal::RoleNotInGate {
            phase: "Pre-deployment".to_string(),
            role: "sre".to_string(),
        }
    );
    // The gate is checked before membership: erin is told the gate, not the role.
    assert!(matches!(
        h.refused("erin", reject("pre", "devops", Some("x"))),
        Refusal::RoleNotInGate { .. }
    ));
    // A phase without a gate asks nobody.
    h.reach_verify();
    assert_eq!(
        h.refused("dan", sign("verify", "devops")),
        Refusal::RoleNotInGate {
            phase: "Verification".to_string(),
            role: "DevOps".to_string(),
        }
    );
}

#[test]
fn sign_offs_for_another_or_unknown_phase_are_refused() {
    let mut h = H::started_by("alice");
    assert_eq!(
        h.refused("dan", sign("prod", "devops")),
        Refusal::NotCurrentPhase {
            phase: "prod".to_string(),
            current: "pre".to_string()
        }
    );
    assert_eq!(
        h.refused("dan", reject("prod", "devops", Some("x"))),
        Refusal::NotCurrentPhase {
            phase: "prod".to_string(),
            current: "pre".to_string()
        }
    );
    assert_eq!(
        h.refused("bob", sign("staging", "qa")),
        Refusal::UnknownPhase("staging".to_string())
    );
    assert_eq!(
        h.refused("bob", reject("staging", "qa", Some("x"))),
        Refusal::UnknownPhase("staging".to_string())
    );
    h.reach_prod();
    assert_eq!(
        h.refused("bob", sign("pre", "qa")),
        Refusal::NotCurrentPhase {
            phase: "pre".to_string(),
            current: "prod".to_string()
        }
    );
}

#[test]
fn repeated_sign_off_is_a_noop() {
    let mut h = H::started_by("alice");
    h.ok("bob", sign("pre", "qa"));
    h.now = at(10);
    h.noop("bob", sign("pre", "qa"));
    assert_eq!(h.run.signoffs.len(), 1);
    assert_eq!(h.run.signoffs[0].at, at(1));
}

#[test]
fn one_person_may_sign_for_each_of_their_roles() {
    let mut h = H::started_by("bob");
    h.ok("alice", sign("pre", "developer"));
    h.satisfy_pre();
    h.ok("bob", advance("pre"));
    // alice is in developer and devops; her developer sign-off on pre does not
    // count for devops on prod.
    let progress = h.run.gate_progress(&h.phase_def("prod"));
    assert!(progress[0].approved.is_empty());
    assert_eq!(
        h.ok("alice", sign("prod", "devops")),
        vec![ev_signed("prod", "devops")]
    );
}

#[test]
fn reject_needs_a_reason() {
    let mut h = H::started_by("alice");
    for reason in [None, Some(""), Some("  ")] {
        let refusal = h.refused("bob", reject("pre", "qa", reason));
        assert_eq!(refusal, Refusal::ReasonRequired("a rejection"));
        assert_eq!(refusal.to_string(), "a rejection needs a reason");
    }
    assert!(h.run.signoffs.is_empty());
}

#[test]
fn reject_records_a_trimmed_reason() {
    let mut h = H::started_by("alice");
    h.now = at(7);
    assert_eq!(
        h.ok("bob", reject("pre", "qa", Some("  flaky tests "))),
        vec![ev_rejected("pre", "qa", "flaky tests")]
    );
    assert_eq!(
        h.run.signoffs,
        vec![SignOff {
            phase: "pre".to_string(),
            role: r("qa"),
            person: p("bob"),
            verdict: Verdict::Rejected {
                reason: "flaky tests".to_string()
            },
            at: at(7),
        }]
    );
    // The same rejection again is a no-op; another reason replaces it.
    h.noop("bob", reject("pre", "qa", Some("flaky tests")));
    assert_eq!(
        h.ok("bob", reject("pre", "qa", Some("coverage dropped"))),
        vec![ev_rejected("pre", "qa", "coverage dropped")]
    );
    assert_eq!(h.run.signoffs.len(), 1);
    assert_eq!(
        h.run.signoffs[0].verdict,
        Verdict::Rejected {
            reason: "coverage dropped".to_string()
        }
    );
}

#[test]
fn reject_then_sign_off_by_the_same_person_replaces_the_verdict() {
    let mut h = H::started_by("alice");
    h.now = at(2);
    h.ok("carol", sign("pre", "qa"));
    h.now = at(3);
    h.ok("bob", reject("pre", "qa", Some("flaky tests")));
    h.now = at(8);
    assert_eq!(h.ok("bob", sign("pre", "qa")), vec![ev_signed("pre", "qa")]);
    // Still one entry per person, updated in place with the new time.
    assert_eq!(h.run.signoffs.len(), 2);
    assert_eq!(h.run.signoffs[1].person, p("bob"));
    assert_eq!(h.run.signoffs[1].verdict, Verdict::Approved);
    assert_eq!(h.run.signoffs[1].at, at(8));
    assert_eq!(h.run.signoffs[0].at, at(2));

    // And back again: an approval can be withdrawn with a rejection.
    h.now = at(9);
    assert_eq!(
        h.ok("bob", reject("pre", "qa", Some("found a bug"))),
        vec![ev_rejected("pre", "qa", "found a bug")]
    );
    let progress = h.run.gate_progress(&h.phase_def("pre"));
    assert_eq!(progress[1].approved, vec![p("carol")]);
    assert_eq!(
        progress[1].rejected,
        vec![(p("bob"), "found a bug".to_string())]
    );
}

#[test]
fn quorum_counts_distinct_people() {
    let mut h = H::started_by("alice");
    h.ok("alice", done("pre", "tests"));
    h.ok("alice", done("pre", "changelog"));
    h.ok("alice", sign("pre", "developer"));
    h.ok("bob", sign("pre", "qa"));
    h.noop("bob", sign("pre", "qa"));
    assert_eq!(
        h.unmet(),
        vec!["QA sign-off: 1 of 2 (ask Bob or Carol)".to_string()]
    );
    assert!(matches!(
        h.refused("alice", advance("pre")),
        Refusal::Unmet(_)
    ));
    h.ok("carol", sign("pre", "qa"));
    assert!(h.unmet().is_empty());
    assert_eq!(
        h.ok("alice", advance("pre")),
        vec![ev_entered("pre", "prod")]
    );
}

#[test]
fn sign_offs_are_kept_per_phase() {
    let mut h = H::started_by("bob");
    h.reach_prod();
    let pre = h.run.gate_progress(&h.phase_def("pre"));
    assert_eq!(pre[0].approved, vec![p("alice")]);
    assert_eq!(pre[1].approved, vec![p("bob"), p("carol")]);
    let prod = h.run.gate_progress(&h.phase_def("prod"));
    assert!(prod[0].approved.is_empty());
}

// ----------------------------------------------------------------- advance

#[test]
fn advance_lists_every_unmet_condition() {
    let mut h = H::started_by("alice");
    let refusal = h.refused("alice", advance("pre"));
    let Refusal::Unmet(list) = &refusal else {
        panic!("expected Unmet, got {refusal:?}");
    };
    assert_eq!(
        list,
        &vec![
            "not done: Run the test suite".to_string(),
            "not done: Update the changelog".to_string(),
            "Developer sign-off: 0 of 1 (ask Alice)".to_string(),
            "QA sign-off: 0 of 2 (ask Bob or Carol)".to_string(),
        ]
    );
    assert_eq!(
        refusal.to_string(),
        "cannot advance yet:\n\
         • not done: Run the test suite\n\
         • not done: Update the changelog\n\
         • Developer sign-off: 0 of 1 (ask Alice)\n\
         • QA sign-off: 0 of 2 (ask Bob or Carol)"
    );
}

#[test]
fn advance_lists_rejections_with_who_and_why_and_partial_quorums() {
    let mut h = H::started_by("alice");
    h.ok("alice", done("pre", "changelog"));
    h.ok("bob", reject("pre", "qa", Some("flaky tests")));
    h.ok("carol", sign("pre", "qa"));
    let refusal = h.refused("alice", advance("pre"));
    assert_eq!(
        refusal,
        Refusal::Unmet(vec![
            "not done: Run the test suite".to_string(),
            "Developer sign-off: 0 of 1 (ask Alice)".to_string(),
            "QA sign-off rejected by Bob: flaky tests".to_string(),
            "QA sign-off: 1 of 2 (ask Bob or Carol)".to_string(),
        ])
    );
}

#[test]
fn a_rejection_blocks_even_when_the_quorum_is_met() {
    // Erin joins QA so that QA can reach its quorum with a rejection standing.
    let mut h = H::started_by("alice");
    h.dir
        .roles
        .get_mut(&r("qa"))
        .unwrap()
        .members
        .push(p("erin"));
    h.satisfy_pre();
    h.ok("erin", reject("pre", "qa", Some("not tested on Safari")));
    assert_eq!(
        h.refused("alice", advance("pre")),
        Refusal::Unmet(vec![
            "QA sign-off rejected by Erin: not tested on Safari".to_string()
        ])
    );
    // Erin changes her mind: her approval replaces the rejection.
    h.ok("erin", sign("pre", "qa"));
    assert_eq!(
        h.ok("alice", advance("pre")),
        vec![ev_entered("pre", "prod")]
    );
}

#[test]
fn several_rejections_are_each_listed() {
    let mut h = H::started_by("alice");
    h.satisfy_pre();
    h.ok("bob", reject("pre", "qa", Some("flaky tests")));
    h.ok("carol", reject("pre", "qa", Some("missing docs")));
    h.ok("alice", reject("pre", "developer", Some("wrong branch")));
    assert_eq!(
        h.refused("alice", advance("pre")),
        Refusal::Unmet(vec![
            "Developer sign-off rejected by Alice: wrong branch".to_string(),
            "Developer sign-off: 0 of 1 (ask Alice)".to_string(),
            "QA sign-off rejected by Bob: flaky tests".to_string(),
            "QA sign-off rejected by Carol: missing docs".to_string(),
            "QA sign-off: 0 of 2 (ask Bob or Carol)".to_string(),
        ])
    );
}

#[test]
fn pending_optional_items_do_not_block() {
    let mut h = H::started_by("alice");
    h.satisfy_pre();
    assert_eq!(h.run.item_state("pre", "announce"), &ItemState::Pending);
    assert!(h.unmet().is_empty());
    assert_eq!(
        h.ok("alice", advance("pre")),
        vec![ev_entered("pre", "prod")]
    );
}

#[test]
fn a_not_applicable_optional_item_does_not_block() {
    let mut h = H::started_by("alice");
    h.satisfy_pre();
    h.ok("alice", na("pre", "announce", Some("internal")));
    assert!(h.unmet().is_empty());
}

#[test]
fn advance_moves_to_the_next_phase() {
    let mut h = H::started_by("alice");
    h.satisfy_pre();
    h.now = at(15);
    assert_eq!(
        h.ok("erin", advance("pre")),
        vec![ev_entered("pre", "prod")]
    );
    assert_eq!(h.run.phase, "prod");
    assert_eq!(h.run.phase_entered_at, at(15));
    assert_eq!(h.run.status, RunStatus::Active);
    assert_eq!(h.run.ended_at, None);
    // The items and sign-offs of the phase left are kept.
    assert!(matches!(
        h.run.item_state("pre", "tests"),
        ItemState::Done { .. }
    ));
    assert_eq!(h.run.signoffs.len(), 3);
}

#[test]
fn a_second_advance_click_on_a_phase_already_left_is_a_noop() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.noop("alice", advance("pre"));
    h.noop("bob", advance("pre"));
    h.ok("dan", done("prod", "deploy"));
    h.ok("dan", sign("prod", "devops"));
    h.ok("dan", advance("prod"));
    h.noop("dan", advance("prod"));
    h.noop("dan", advance("pre"));
}

#[test]
fn advance_of_a_phase_not_yet_reached_is_refused() {
    let mut h = H::started_by("alice");
    let refusal = h.refused("alice", advance("prod"));
    assert_eq!(
        refusal,
        Refusal::NotCurrentPhase {
            phase: "prod".to_string(),
            current: "pre".to_string()
        }
    );
    assert!(matches!(
        h.refused("alice", advance("verify")),
        Refusal::NotCurrentPhase { .. }
    ));
    // The rollback phase while not rolling back.
    assert!(matches!(
        h.refused("dan", advance("rollback")),
        Refusal::NotCurrentPhase { .. }
    ));
}

#[test]
fn advance_of_an_unknown_phase_is_refused() {
    let mut h = H::started_by("alice");
    // Unlike items and sign-offs, Advance reports an unknown phase as
    // "not the current phase" rather than UnknownPhase.
    assert_eq!(
        h.refused("alice", advance("staging")),
        Refusal::NotCurrentPhase {
            phase: "staging".to_string(),
            current: "pre".to_string()
        }
    );
}

#[test]
fn four_eyes_refuses_the_starter_as_the_only_approver() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.ok("alice", done("prod", "deploy"));
    h.ok("alice", sign("prod", "devops"));
    let refusal = h.refused("alice", advance("prod"));
    assert_eq!(
        refusal,
        Refusal::Unmet(vec![
            "four-eyes rule: Alice started this deployment and cannot be its only approver"
                .to_string()
        ])
    );
    assert!(refusal.to_string().contains("four-eyes"));
    // The starter's sign-off still counts toward the quorum.
    let progress = h.run.gate_progress(&h.phase_def("prod"));
    assert!(progress[0].is_met());
    // Another approver satisfies the rule.
    h.ok("dan", sign("prod", "devops"));
    assert!(h.unmet().is_empty());
    assert_eq!(
        h.ok("alice", advance("prod")),
        vec![ev_entered("prod", "verify")]
    );
}

#[test]
fn four_eyes_is_listed_alongside_other_unmet_conditions() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.ok("alice", sign("prod", "devops"));
    assert_eq!(
        h.unmet(),
        vec![
            "not done: Deploy to production".to_string(),
            "four-eyes rule: Alice started this deployment and cannot be its only approver"
                .to_string(),
        ]
    );
}

#[test]
fn four_eyes_does_not_apply_when_someone_else_started_the_run() {
    let mut h = H::started_by("dan");
    h.reach_prod();
    h.ok("dan", done("prod", "deploy"));
    h.ok("alice", sign("prod", "devops"));
    assert!(h.unmet().is_empty());
    assert_eq!(
        h.ok("dan", advance("prod")),
        vec![ev_entered("prod", "verify")]
    );
}

#[test]
fn four_eyes_is_not_mentioned_before_anyone_approved() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.ok("alice", done("prod", "deploy"));
    assert_eq!(
        h.unmet(),
        vec!["DevOps sign-off: 0 of 1 (ask Alice or Dan)".to_string()]
    );
}

#[test]
fn four_eyes_only_applies_to_gates_that_ask_for_it() {
    // On the pre gate (no four-eyes) the starter may be the only Developer.
    let mut h = H::started_by("alice");
    h.satisfy_pre();
    assert!(h.unmet().is_empty());
}

#[test]
fn four_eyes_counts_approvers_across_every_role_of_the_gate() {
    // A four-eyes gate with Developer 1 + DevOps 1: alice alone fills both.
    let mut rb = runbook();
    rb.phases[1].gate.signoffs.insert(0, quorum("developer", 1));
    let mut h = H::with(rb, "alice");
    h.reach_prod();
    h.ok("alice", done("prod", "deploy"));
    h.ok("alice", sign("prod", "developer"));
    h.ok("alice", sign("prod", "devops"));
    assert_eq!(
        h.unmet(),
        vec![
            "four-eyes rule: Alice started this deployment and cannot be its only approver"
                .to_string()
        ]
    );
    h.ok("dan", sign("prod", "devops"));
    assert!(h.unmet().is_empty());
}

#[test]
fn advance_of_the_last_phase_completes_the_run() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    h.ok("bob", done("verify", "health"));
    h.now = at(60);
    assert_eq!(h.ok("bob", advance("verify")), vec![Event::Completed]);
    assert_eq!(h.run.status, RunStatus::Completed);
    assert_eq!(h.run.ended_at, Some(at(60)));
    assert_eq!(h.run.end_reason, None);
    assert_eq!(h.run.phase, "verify", "completing keeps the last phase");
    // A second click on the same button changes nothing and is not an error.
    assert_eq!(h.ok("bob", advance("verify")), vec![]);
    assert_eq!(h.run.status, RunStatus::Completed);
    // Anything else on the closed run is refused.
    let refusal = h.refused("bob", done("verify", "health"));
    assert_eq!(
        refusal,
        Refusal::Closed {
            number: 42,
            status: "completed"
        }
    );
    assert_eq!(
        refusal.to_string(),
        "deployment #42 is completed; nothing more can be done on it"
    );
}

#[test]
fn the_last_phase_still_needs_its_items() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    assert_eq!(
        h.refused("alice", advance("verify")),
        Refusal::Unmet(vec!["not done: Check the health endpoint".to_string()])
    );
    assert_eq!(h.run.status, RunStatus::Active);
}

#[test]
fn a_full_walk_emits_the_expected_events_in_order() {
    let mut h = H::started_by("alice");
    let mut log = Vec::new();
    log.extend(h.ok("alice", done("pre", "tests")));
    log.extend(h.ok("alice", done("pre", "changelog")));
    log.extend(h.ok("alice", sign("pre", "developer")));
    log.extend(h.ok("bob", sign("pre", "qa")));
    log.extend(h.ok("carol", sign("pre", "qa")));
    log.extend(h.ok("alice", advance("pre")));
    log.extend(h.ok("alice", done("prod", "deploy")));
    log.extend(h.ok("dan", sign("prod", "devops")));
    log.extend(h.ok("alice", advance("prod")));
    log.extend(h.ok("alice", done("verify", "health")));
    log.extend(h.ok("alice", advance("verify")));
    let names: Vec<&str> = log.iter().map(Event::name).collect();
    assert_eq!(
        names,
        vec![
            "item.done",
            "item.done",
            "signoff.approved",
            "signoff.approved",
            "signoff.approved",
            "phase.entered",
            "item.done",
            "run.production_deployed",
            "signoff.approved",
            "phase.entered",
            "item.done",
            "run.completed",
        ]
    );
    assert_eq!(h.run.status, RunStatus::Completed);
}

// ------------------------------------------------------------------- abort

#[test]
fn the_starter_may_abort() {
    let mut h = H::started_by("erin");
    h.now = at(12);
    assert_eq!(
        h.ok("erin", abort(Some(" wrong version "))),
        vec![Event::Aborted {
            reason: "wrong version".to_string()
        }]
    );
    assert_eq!(h.run.status, RunStatus::Aborted);
    assert_eq!(h.run.ended_at, Some(at(12)));
    assert_eq!(h.run.end_reason.as_deref(), Some("wrong version"));
    assert_eq!(h.run.phase, "pre");
}

#[test]
fn a_member_of_an_abort_role_may_abort() {
    let mut h = H::started_by("bob");
    assert_eq!(
        h.ok("dan", abort(Some("freeze"))),
        vec![Event::Aborted {
            reason: "freeze".to_string()
        }]
    );
    assert_eq!(h.run.status, RunStatus::Aborted);
}

#[test]
fn anyone_else_may_not_abort_and_is_told_who_may() {
    let mut h = H::started_by("bob");
    let refusal = h.refused("carol", abort(Some("because")));
    assert_eq!(
        refusal,
        Refusal::NotAllowed {
            action: "abort this deployment",
            allowed: vec![
                ("Bob (who started it)".to_string(), vec![]),
                (
                    "DevOps".to_string(),
                    vec!["Alice".to_string(), "Dan".to_string()]
                ),
            ],
        }
    );
    assert_eq!(
        refusal.to_string(),
        "only Bob (who started it) or DevOps (Alice, Dan) may abort this deployment"
    );
    // Permission is checked before the reason.
    assert!(matches!(
        h.refused("erin", abort(None)),
        Refusal::NotAllowed { .. }
    ));
    assert_eq!(h.run.status, RunStatus::Active);
}

#[test]
fn abort_needs_a_reason() {
    let mut h = H::started_by("alice");
    for reason in [None, Some(""), Some("   ")] {
        let refusal = h.refused("alice", abort(reason));
        assert_eq!(refusal, Refusal::ReasonRequired("aborting a deployment"));
        assert_eq!(refusal.to_string(), "aborting a deployment needs a reason");
    }
    assert_eq!(h.run.status, RunStatus::Active);
}

#[test]
fn after_abort_every_action_is_refused_as_closed() {
    let mut h = H::started_by("alice");
    h.ok("alice", done("pre", "tests"));
    h.ok("alice", abort(Some("wrong version")));
    let closed = Refusal::Closed {
        number: 42,
        status: "aborted",
    };
    assert_eq!(
        closed.to_string(),
        "deployment #42 is aborted; nothing more can be done on it"
    );
    let actions = vec![
        done("pre", "changelog"),
        done("pre", "tests"),
        undo("pre", "tests"),
        undo("pre", "changelog"),
        na("pre", "announce", Some("x")),
        na("pre", "tests", None),
        sign("pre", "qa"),
        reject("pre", "qa", Some("x")),
        advance("pre"),
        rollback(Some("undo it")),
        done("nope", "nope"),
    ];
    for action in actions {
        for who in ["alice", "bob", "dan", "erin"] {
            assert_eq!(h.refused(who, action.clone()), closed, "{who} {action:?}");
        }
    }
    // A repeated abort (a double click, a retried command) changes nothing.
    assert_eq!(h.ok("alice", abort(Some("again"))), vec![]);
    assert_eq!(h.run.end_reason.as_deref(), Some("wrong version"));
}

#[test]
fn abort_during_a_rollback_ends_it_as_aborted() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    h.ok("dan", rollback(Some("errors up")));
    h.now = at(40);
    assert_eq!(
        h.ok("alice", abort(Some("handled by hand"))),
        vec![Event::Aborted {
            reason: "handled by hand".to_string()
        }]
    );
    assert_eq!(h.run.status, RunStatus::Aborted);
    assert_eq!(h.run.ended_at, Some(at(40)));
    assert_eq!(h.run.end_reason.as_deref(), Some("handled by hand"));
}

// ---------------------------------------------------------------- rollback

#[test]
fn rollback_switches_to_the_rollback_phase() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    let t0 = h.run.t0;
    h.now = at(30);
    assert_eq!(
        h.ok("dan", rollback(Some("  error rate 5% "))),
        vec![Event::RollbackStarted {
            from: "verify".to_string(),
            reason: "error rate 5%".to_string(),
        }]
    );
    assert_eq!(h.run.status, RunStatus::RollingBack);
    assert_eq!(h.run.phase, "rollback");
    assert_eq!(h.run.phase_entered_at, at(30));
    assert_eq!(h.run.end_reason.as_deref(), Some("error rate 5%"));
    assert_eq!(h.run.ended_at, None);
    assert_eq!(h.run.t0, t0, "T0 is kept");
    assert!(h.run.status.is_open());
}

#[test]
fn rollback_is_allowed_from_any_regular_phase() {
    let mut h = H::started_by("alice");
    assert_eq!(
        h.ok("alice", rollback(Some("abandon"))),
        vec![Event::RollbackStarted {
            from: "pre".to_string(),
            reason: "abandon".to_string(),
        }]
    );
    assert_eq!(h.run.phase, "rollback");
}

#[test]
fn rollback_is_role_gated() {
    let mut h = H::started_by("bob");
    // Not even the starter may roll back without the role.
    for who in ["bob", "carol", "erin"] {
        let refusal = h.refused(who, rollback(Some("errors")));
        assert_eq!(
            refusal,
            Refusal::NotAllowed {
                action: "roll back",
                allowed: vec![(
                    "DevOps".to_string(),
                    vec!["Alice".to_string(), "Dan".to_string()]
                )],
            }
        );
        assert_eq!(
            refusal.to_string(),
            "only DevOps (Alice, Dan) may roll back"
        );
    }
    // Permission is checked before the reason.
    assert!(matches!(
        h.refused("erin", rollback(None)),
        Refusal::NotAllowed { .. }
    ));
}

#[test]
fn rollback_needs_a_reason() {
    let mut h = H::started_by("alice");
    for reason in [None, Some(""), Some(" \n ")] {
        let refusal = h.refused("dan", rollback(reason));
        assert_eq!(refusal, Refusal::ReasonRequired("a rollback"));
        assert_eq!(refusal.to_string(), "a rollback needs a reason");
    }
    assert_eq!(h.run.status, RunStatus::Active);
}

#[test]
fn a_second_rollback_is_refused() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.ok("dan", rollback(Some("errors")));
    let refusal = h.refused("alice", rollback(Some("still errors")));
    assert_eq!(refusal, Refusal::AlreadyRollingBack);
    assert_eq!(refusal.to_string(), "the run is already rolling back");
    // Even without a reason: that it is already rolling back comes first.
    assert_eq!(
        h.refused("dan", rollback(None)),
        Refusal::AlreadyRollingBack
    );
    // But a non-member is still told they may not.
    assert!(matches!(
        h.refused("erin", rollback(Some("x"))),
        Refusal::NotAllowed { .. }
    ));
}

#[test]
fn walking_the_rollback_phase_ends_rolled_back() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    h.ok("dan", rollback(Some("errors")));
    assert_eq!(
        h.refused("dan", advance("rollback")),
        Refusal::Unmet(vec!["not done: Revert to the previous version".to_string()])
    );
    h.now = at(45);
    assert_eq!(
        h.ok("dan", done("rollback", "revert")),
        vec![ev_done("rollback", "revert")]
    );
    assert_eq!(
        h.run.item_state("rollback", "revert"),
        &ItemState::Done {
            by: p("dan"),
            at: at(45)
        }
    );
    h.now = at(50);
    assert_eq!(h.ok("erin", advance("rollback")), vec![Event::RolledBack]);
    assert_eq!(h.run.status, RunStatus::RolledBack);
    assert_eq!(h.run.ended_at, Some(at(50)));
    assert_eq!(
        h.run.end_reason.as_deref(),
        Some("errors"),
        "the rollback reason is kept"
    );
    assert_eq!(h.run.phase, "rollback");
    // A second click on "Finish rollback" changes nothing.
    assert_eq!(h.ok("dan", advance("rollback")), vec![]);
    assert_eq!(
        h.refused("dan", done("rollback", "revert")),
        Refusal::Closed {
            number: 42,
            status: "rolled back"
        }
    );
}

#[test]
fn while_rolling_back_regular_phases_are_closed_to_actions() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.ok("dan", rollback(Some("errors")));
    let not_current = Refusal::NotCurrentPhase {
        phase: "prod".to_string(),
        current: "rollback".to_string(),
    };
    assert_eq!(h.refused("dan", done("prod", "deploy")), not_current);
    assert_eq!(h.refused("dan", sign("prod", "devops")), not_current);
    // Advance clicks on regular phases are no-ops (the phase counts as left).
    h.noop("dan", advance("prod"));
    h.noop("dan", advance("pre"));
}

#[test]
fn rollback_phase_gate_is_honoured() {
    let mut rb = runbook();
    rb.rollback.as_mut().unwrap().phase.gate = Gate {
        signoffs: vec![quorum("devops", 1)],
        four_eyes: false,
    };
    let mut h = H::with(rb, "alice");
    h.ok("dan", rollback(Some("errors")));
    h.ok("dan", done("rollback", "revert"));
    assert_eq!(
        h.refused("dan", advance("rollback")),
        Refusal::Unmet(vec![
            "DevOps sign-off: 0 of 1 (ask Alice or Dan)".to_string()
        ])
    );
    assert_eq!(
        h.ok("alice", sign("rollback", "devops")),
        vec![ev_signed("rollback", "devops")]
    );
    assert_eq!(h.ok("dan", advance("rollback")), vec![Event::RolledBack]);
}

#[test]
fn a_runbook_without_rollback_refuses_it() {
    let mut h = H::with(runbook_without_rollback(), "alice");
    let refusal = h.refused("dan", rollback(Some("errors")));
    assert_eq!(refusal, Refusal::NoRollback);
    assert_eq!(refusal.to_string(), "this runbook has no rollback phase");
    // NoRollback comes before permission and reason.
    assert_eq!(h.refused("erin", rollback(None)), Refusal::NoRollback);
    assert_eq!(h.run.status, RunStatus::Active);
}

#[test]
fn after_completion_rollback_and_abort_are_closed() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    h.ok("alice", done("verify", "health"));
    h.ok("alice", advance("verify"));
    let closed = Refusal::Closed {
        number: 42,
        status: "completed",
    };
    assert_eq!(h.refused("dan", rollback(Some("late errors"))), closed);
    assert_eq!(h.refused("alice", abort(Some("oops"))), closed);
    assert_eq!(h.refused("alice", undo("verify", "health")), closed);
}

// ---------------------------------------------------------------- helpers

#[test]
fn gate_progress_reports_each_role_in_gate_order() {
    let mut h = H::started_by("alice");
    let pre = h.phase_def("pre");
    assert_eq!(
        h.run.gate_progress(&pre),
        vec![
            RoleProgress {
                role: r("developer"),
                quorum: 1,
                approved: vec![],
                rejected: vec![],
            },
            RoleProgress {
                role: r("qa"),
                quorum: 2,
                approved: vec![],
                rejected: vec![],
            },
        ]
    );
    h.ok("carol", sign("pre", "qa"));
    h.ok("bob", reject("pre", "qa", Some("flaky")));
    h.ok("alice", sign("pre", "developer"));
    let progress = h.run.gate_progress(&pre);
    assert_eq!(
        progress,
        vec![
            RoleProgress {
                role: r("developer"),
                quorum: 1,
                approved: vec![p("alice")],
                rejected: vec![],
            },
            RoleProgress {
                role: r("qa"),
                quorum: 2,
                approved: vec![p("carol")],
                rejected: vec![(p("bob"), "flaky".to_string())],
            },
        ]
    );
    assert!(progress[0].is_met());
    assert!(!progress[1].is_met());
    // A phase without a gate has no progress to report.
    assert!(h.run.gate_progress(&h.phase_def("verify")).is_empty());
}

#[test]
fn gate_progress_ignores_sign_offs_of_other_phases_and_roles() {
    let mut run = Run::start(
        &runbook(),
        Platform::Shell,
        "c",
        "s",
        "v",
        "e",
        &p("alice"),
        base(),
    );
    let so = |phase: &str, role: &str, person: &str, verdict: Verdict| SignOff {
        phase: phase.to_string(),
        role: r(role),
        person: p(person),
        verdict,
        at: base(),
    };
    run.signoffs = vec![
        so("prod", "qa", "bob", Verdict::Approved),
        so("pre", "devops", "dan", Verdict::Approved),
        so("pre", "qa", "carol", Verdict::Approved),
        so(
            "verify",
            "qa",
            "bob",
            Verdict::Rejected {
                reason: "x".to_string(),
            },
        ),
    ];
    let rb = runbook();
    let progress = run.gate_progress(rb.phase("pre").unwrap());
    assert_eq!(progress.len(), 2);
    assert!(progress[0].approved.is_empty());
    assert_eq!(progress[1].approved, vec![p("carol")]);
    assert!(progress[1].rejected.is_empty());
}

#[test]
fn role_progress_is_met_needs_quorum_and_no_rejection() {
    let rp = |approved: &[&str], rejected: &[&str], quorum: u32| RoleProgress {
        role: r("qa"),
        quorum,
        approved: approved.iter().map(|a| p(a)).collect(),
        rejected: rejected.iter().map(|x| (p(x), "no".to_string())).collect(),
    };
    assert!(!rp(&[], &[], 2).is_met());
    assert!(!rp(&["bob"], &[], 2).is_met());
    assert!(rp(&["bob", "carol"], &[], 2).is_met());
    assert!(rp(&["bob", "carol", "erin"], &[], 2).is_met());
    assert!(!rp(&["bob", "carol"], &["erin"], 2).is_met());
    assert!(rp(&[], &[], 0).is_met());
    assert!(!rp(&[], &["erin"], 0).is_met());
}

#[test]
fn unmet_is_empty_when_the_phase_may_be_left() {
    let mut h = H::started_by("alice");
    assert_eq!(h.unmet().len(), 4);
    h.ok("alice", done("pre", "tests"));
    assert_eq!(h.unmet().len(), 3);
    h.ok("alice", done("pre", "changelog"));
    assert_eq!(h.unmet().len(), 2);
    h.ok("alice", sign("pre", "developer"));
    assert_eq!(
        h.unmet(),
        vec!["QA sign-off: 0 of 2 (ask Bob or Carol)".to_string()]
    );
    h.ok("bob", sign("pre", "qa"));
    h.ok("carol", sign("pre", "qa"));
    assert!(h.unmet().is_empty());
}

#[test]
fn unmet_does_not_change_the_run() {
    let h = H::started_by("alice");
    let before = h.run.clone();
    let _ = h.unmet();
    assert_eq!(h.run, before);
}

#[test]
fn unmet_names_a_phase_the_runbook_lost() {
    let mut h = H::started_by("alice");
    h.run.phase = "gone".to_string();
    assert_eq!(
        h.unmet(),
        vec!["the runbook no longer has phase \"gone\"".to_string()]
    );
    // Advance on it is refused with that reason.
    assert_eq!(
        h.refused("alice", advance("gone")),
        Refusal::Unmet(vec!["the runbook no longer has phase \"gone\"".to_string()])
    );
}

#[test]
fn unmet_falls_back_to_keys_for_unknown_roles_and_people() {
    let mut h = H::started_by("alice");
    h.dir = Directory::default();
    assert_eq!(
        h.unmet(),
        vec![
            "not done: Run the test suite".to_string(),
            "not done: Update the changelog".to_string(),
            "developer sign-off: 0 of 1 (ask an administrator to add members to the role)"
                .to_string(),
            "qa sign-off: 0 of 2 (ask an administrator to add members to the role)".to_string(),
        ]
    );
}

#[test]
fn item_state_is_pending_when_absent() {
    let h = H::started_by("alice");
    assert_eq!(h.run.item_state("pre", "tests"), &ItemState::Pending);
    assert_eq!(h.run.item_state("no", "such"), &ItemState::Pending);
}

// ------------------------------------------------------------ status/names

const ALL_STATUSES: [RunStatus; 5] = [
    RunStatus::Active,
    RunStatus::RollingBack,
    RunStatus::Completed,
    RunStatus::Aborted,
    RunStatus::RolledBack,
];

#[test]
fn run_status_round_trips_through_its_name() {
    for st in ALL_STATUSES {
        assert_eq!(RunStatus::parse(st.as_str()), Some(st));
    }
    let names: Vec<&str> = ALL_STATUSES.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "active",
            "rolling_back",
            "completed",
            "aborted",
            "rolled_back"
        ]
    );
    for bad in ["", "Active", "ACTIVE", "rolling back", "done", " active"] {
        assert_eq!(RunStatus::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn run_status_serde_names_match_as_str() {
    for st in ALL_STATUSES {
        let json = serde_json::to_string(&st).unwrap();
        assert_eq!(json, format!("\"{}\"", st.as_str()));
        assert_eq!(serde_json::from_str::<RunStatus>(&json).unwrap(), st);
    }
}

#[test]
fn run_status_openness_and_labels() {
    let open: Vec<bool> = ALL_STATUSES.iter().map(|s| s.is_open()).collect();
    assert_eq!(open, vec![true, true, false, false, false]);
    let labels: Vec<&str> = ALL_STATUSES.iter().map(|s| s.label()).collect();
    assert_eq!(
        labels,
        vec![
            "in progress",
            "rolling back",
            "completed",
            "aborted",
            "rolled back"
        ]
    );
}

#[test]
fn event_names_are_distinct() {
    let s = String::new;
    let all = [
        Event::ItemDone {
            phase: s(),
            item: s(),
        },
        Event::ItemUndone {
            phase: s(),
            item: s(),
        },
        Event::ItemNotApplicable {
            phase: s(),
            item: s(),
            reason: s(),
        },
        Event::ProductionDeployed,
        Event::SignedOff {
            phase: s(),
            role: r("qa"),
        },
        Event::Rejected {
            phase: s(),
            role: r("qa"),
            reason: s(),
        },
        Event::PhaseEntered { from: s(), to: s() },
        Event::Completed,
        Event::Aborted { reason: s() },
        Event::RollbackStarted {
            from: s(),
            reason: s(),
        },
        Event::RolledBack,
    ];
    let names: Vec<&str> = all.iter().map(Event::name).collect();
    let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "{names:?}");
    assert_eq!(
        names,
        vec![
            "item.done",
            "item.undone",
            "item.not_applicable",
            "run.production_deployed",
            "signoff.approved",
            "signoff.rejected",
            "phase.entered",
            "run.completed",
            "run.aborted",
            "run.rollback_started",
            "run.rolled_back",
        ]
    );
}

#[test]
fn verdict_display() {
    assert_eq!(Verdict::Approved.to_string(), "approved");
    assert_eq!(
        Verdict::Rejected {
            reason: "flaky tests".to_string()
        }
        .to_string(),
        "rejected: flaky tests"
    );
}

#[test]
fn not_allowed_lists_roles_without_members_by_name_only() {
    let refusal = Refusal::NotAllowed {
        action: "roll back",
        allowed: vec![
            ("SRE".to_string(), vec![]),
            ("DevOps".to_string(), vec!["Dan".to_string()]),
        ],
    };
    assert_eq!(
        refusal.to_string(),
        "only SRE or DevOps (Dan) may roll back"
    );
}

// ------------------------------------------------ questionable behaviours

/// Sign-offs are not re-checked against the directory: someone who signed and
/// then left the role (a bot-file reload) still counts toward the quorum.
#[test]
fn a_sign_off_still_counts_after_the_signer_leaves_the_role() {
    let mut h = H::started_by("alice");
    h.ok("alice", done("pre", "tests"));
    h.ok("alice", done("pre", "changelog"));
    h.ok("alice", sign("pre", "developer"));
    h.ok("bob", sign("pre", "qa"));
    h.ok("carol", sign("pre", "qa"));
    h.dir
        .roles
        .get_mut(&r("qa"))
        .unwrap()
        .members
        .retain(|m| *m != p("carol"));
    assert!(h.unmet().is_empty());
    assert_eq!(
        h.ok("alice", advance("pre")),
        vec![ev_entered("pre", "prod")]
    );
}

/// While rolling back, every regular phase counts as "already left", so an
/// Advance for a phase the run never reached is a silent no-op rather than
/// NotCurrentPhase.
#[test]
fn while_rolling_back_advance_of_a_never_reached_phase_is_a_noop() {
    let mut h = H::started_by("alice");
    h.ok("dan", rollback(Some("abandon")));
    assert_eq!(h.run.phase, "rollback");
    h.noop("dan", advance("verify"));
    h.noop("dan", advance("prod"));
    // An unknown phase is still refused.
    assert!(matches!(
        h.refused("dan", advance("staging")),
        Refusal::NotCurrentPhase { .. }
    ));
}

// ------------------------------------------------------------------- bugs

/// The loader refuses an optional production_deploy item, but the domain
/// holds on its own: replacing the deploy's Done with Not applicable clears
/// T0 as Undo does.
#[test]
fn not_applicable_over_a_done_production_deploy_clears_t0() {
    let mut rb = runbook();
    rb.phases[1].items[0].optional = true;
    let mut h = H::with(rb, "alice");
    h.reach_prod();
    h.ok("dan", done("prod", "deploy"));
    assert!(h.run.t0.is_some());
    h.ok("dan", na("prod", "deploy", Some("deployed by hand")));
    assert_eq!(
        h.run.t0, None,
        "T0 survived the deploy being marked not applicable"
    );
}

#[test]
fn not_applicable_on_an_optional_production_deploy_does_not_set_t0() {
    let mut rb = runbook();
    rb.phases[1].items[0].optional = true;
    let mut h = H::with(rb, "alice");
    h.reach_prod();
    assert_eq!(
        h.ok("dan", na("prod", "deploy", Some("config-only change"))),
        vec![Event::ItemNotApplicable {
            phase: "prod".to_string(),
            item: "deploy".to_string(),
            reason: "config-only change".to_string(),
        }]
    );
    assert_eq!(h.run.t0, None);
}

#[test]
fn fixing_forward_is_for_the_rollback_roles_and_needs_a_reason() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    assert!(matches!(
        h.refused(
            "erin",
            Action::FixForward {
                reason: Some("patch".into())
            }
        ),
        Refusal::NotAllowed {
            action: "choose to fix forward",
            ..
        }
    ));
    assert_eq!(
        h.refused(
            "dan",
            Action::FixForward {
                reason: Some("  ".into())
            }
        ),
        Refusal::ReasonRequired("fixing forward")
    );
    let before = h.run.clone();
    assert_eq!(
        h.ok(
            "dan",
            Action::FixForward {
                reason: Some("patch ready".into())
            }
        ),
        vec![Event::FixForwardChosen {
            reason: "patch ready".into()
        }]
    );
    assert_eq!(
        h.run, before,
        "the decision is recorded, the run goes on as it was"
    );
}

// ------------------------------------------------- incidents and checks

#[test]
fn an_open_incident_keeps_the_last_phase_from_completing() {
    let mut h = H::started_by("alice");
    h.reach_verify();
    h.ok("alice", done("verify", "health"));
    h.run.open_incident = Some(7);
    let refusal = h.refused("alice", advance("verify"));
    assert!(
        refusal.to_string().contains("incident #7 is still open"),
        "{refusal}"
    );
    h.run.open_incident = None;
    assert_eq!(h.ok("alice", advance("verify")), vec![Event::Completed]);
}

#[test]
fn an_open_incident_does_not_hold_back_earlier_phases() {
    let mut h = H::started_by("alice");
    h.satisfy_pre();
    h.run.open_incident = Some(7);
    assert_eq!(
        h.ok("alice", advance("pre")),
        vec![ev_entered("pre", "prod")]
    );
}

#[test]
fn still_needed_lists_the_current_phase_then_the_phases_ahead() {
    let mut h = H::started_by("alice");
    h.reach_prod();
    h.ok("alice", done("prod", "deploy"));
    let needed = h.run.still_needed(&h.rb, &h.dir);
    assert_eq!(
        needed,
        vec![
            "Production: DevOps sign-off: 0 of 1 (ask Alice or Dan)".to_string(),
            "finish Production".to_string(),
            "walk Verification".to_string(),
        ]
    );
    h.ok("dan", sign("prod", "devops"));
    h.ok("alice", advance("prod"));
    h.ok("alice", done("verify", "health"));
    assert_eq!(
        h.run.still_needed(&h.rb, &h.dir),
        vec!["finish Verification".to_string()]
    );
    h.ok("alice", advance("verify"));
    assert!(h.run.still_needed(&h.rb, &h.dir).is_empty(), "completed");
}

fn checked_runbook() -> Runbook {
    let mut rb = runbook();
    rb.phases[2].items[0].check = Some(crate::domain::HttpCheck {
        url: "http://127.0.0.1:9/health".into(),
        expect_status: 200,
        timeout: crate::domain::Dur::from_millis(2000),
        body_contains: None,
    });
    rb
}

fn check_result(passed: bool, detail: &str, minutes: i64) -> Action {
    Action::RecordCheck {
        phase: "verify".into(),
        item: "health".into(),
        result: CheckResult {
            passed,
            detail: detail.into(),
            at: at(minutes),
        },
    }
}

#[test]
fn a_passing_check_marks_its_item_done_by_the_automated_check() {
    let mut h = H::with(checked_runbook(), "alice");
    h.reach_verify();
    let events = h.ok(AUTOMATED_CHECK, check_result(true, "HTTP 200 in 12 ms", 1));
    assert_eq!(
        events,
        vec![
            Event::CheckPassed {
                phase: "verify".into(),
                item: "health".into(),
                detail: "HTTP 200 in 12 ms".into()
            },
            ev_done("verify", "health"),
        ]
    );
    assert!(matches!(
        h.run.item_state("verify", "health"),
        ItemState::Done { by, .. } if by.as_str() == AUTOMATED_CHECK
    ));
    assert!(h.unmet().is_empty(), "{:?}", h.unmet());
}

#[test]
fn a_failing_check_blocks_the_phase_and_takes_back_a_pass() {
    let mut h = H::with(checked_runbook(), "alice");
    h.reach_verify();
    h.ok(AUTOMATED_CHECK, check_result(true, "HTTP 200 in 12 ms", 1));
    let events = h.ok(
        AUTOMATED_CHECK,
        check_result(false, "HTTP 503, expected 200 (40 ms)", 2),
    );
    assert_eq!(
        events,
        vec![Event::CheckFailed {
            phase: "verify".into(),
            item: "health".into(),
            detail: "HTTP 503, expected 200 (40 ms)".into()
        }]
    );
    assert_eq!(h.run.item_state("verify", "health"), &ItemState::Pending);
    assert_eq!(
        h.unmet(),
        vec!["check failing: Check the health endpoint — HTTP 503, expected 200 (40 ms)"]
    );
    let refusal = h.refused("alice", advance("verify"));
    assert!(refusal.to_string().contains("check failing"), "{refusal}");
    // A person may answer for it by hand; the card still shows the failure.
    h.ok("alice", done("verify", "health"));
    assert!(h.unmet().is_empty());
    assert!(!h.run.check("verify", "health").unwrap().passed);
}

#[test]
fn a_failing_check_does_not_undo_what_a_person_marked_done() {
    let mut h = H::with(checked_runbook(), "alice");
    h.reach_verify();
    h.ok("dan", done("verify", "health"));
    h.ok(
        AUTOMATED_CHECK,
        check_result(false, "no answer within 2s", 1),
    );
    assert!(matches!(
        h.run.item_state("verify", "health"),
        ItemState::Done { by, .. } if by.as_str() == "dan"
    ));
}

#[test]
fn a_check_result_for_a_phase_already_left_changes_nothing() {
    let mut h = H::with(checked_runbook(), "alice");
    h.reach_prod();
    h.noop(AUTOMATED_CHECK, check_result(false, "refused", 1));
}

#[test]
fn the_actions_that_need_a_reason_are_those_decide_asks_one_of() {
    let cases: Vec<(&str, Action)> = vec![
        ("alice", done("pre", "tests")),
        ("alice", undo("pre", "tests")),
        ("alice", na("pre", "announce", None)),
        ("bob", sign("pre", "qa")),
        ("bob", reject("pre", "qa", None)),
        ("alice", advance("pre")),
        ("alice", abort(None)),
        ("alice", rollback(None)),
        ("alice", Action::FixForward { reason: None }),
    ];
    for (who, action) in cases {
        let mut h = H::started_by("alice");
        let needs = action.needs_reason();
        let asked = matches!(h.act(who, action.clone()), Err(Refusal::ReasonRequired(_)));
        assert_eq!(needs, asked, "{action:?}");
        // With a reason, the reason is no longer what stops it.
        let given = action.with_reason(Some("because".into()));
        let asked = matches!(h.act(who, given), Err(Refusal::ReasonRequired(_)));
        assert!(!asked, "{who}");
    }
}

// ------------------------------------------------------------ pipelines

fn report(status: ReportStatus, by: &str) -> ItemReport {
    ItemReport {
        status,
        by: by.to_string(),
        url: Some("https://ci.example.com/1".into()),
        note: Some("step 3".into()),
        at: at(1),
    }
}

fn reported(item: &str, status: ReportStatus) -> Action {
    Action::Report {
        phase: "pre".into(),
        item: item.into(),
        report: report(status, "GitHub Actions"),
    }
}

#[test]
fn a_pipeline_reports_running_then_failed_then_done() {
    let mut h = H::started_by("alice");
    let events = h.ok("GitHub Actions", reported("tests", ReportStatus::Running));
    assert_eq!(
        events,
        vec![Event::ItemReported {
            phase: "pre".into(),
            item: "tests".into(),
            status: ReportStatus::Running
        }]
    );
    assert_eq!(h.run.item_state("pre", "tests"), &ItemState::Pending);
    h.ok("GitHub Actions", reported("tests", ReportStatus::Failed));
    let unmet = h.run.unmet(&h.rb, &h.dir);
    assert!(
        unmet.contains(&"failed in GitHub Actions: Run the test suite: step 3".to_string()),
        "{unmet:?}"
    );
    let events = h.ok("GitHub Actions", reported("tests", ReportStatus::Done));
    assert_eq!(
        events,
        vec![Event::ItemDone {
            phase: "pre".into(),
            item: "tests".into()
        }]
    );
    assert!(
        matches!(h.run.item_state("pre", "tests"), ItemState::Done { by, .. } if by.as_str() == "GitHub Actions")
    );
    // Done again is a retry; anything else on a done item is refused.
    assert!(h
        .ok("GitHub Actions", reported("tests", ReportStatus::Done))
        .is_empty());
    assert_eq!(
        h.refused("GitHub Actions", reported("tests", ReportStatus::Failed)),
        Refusal::AlreadyDone("Run the test suite".into())
    );
}

#[test]
fn only_the_items_roles_may_start_its_pipeline_and_a_second_press_starts_nothing() {
    let mut rb = runbook();
    rb.phases[0].items[0].pipeline = Some(super::super::runbook::PipelineStep {
        hook: "ci".into(),
        roles: vec![r("devops")],
        timeout: crate::domain::Dur::from_mins(30),
    });
    let mut h = H::with(rb, "alice");
    let press = || Action::StartPipeline {
        phase: "pre".into(),
        item: "tests".into(),
        runner: "GitHub Actions".into(),
    };
    assert!(matches!(
        h.refused("erin", press()),
        Refusal::NotAllowed {
            action: "start this pipeline",
            ..
        }
    ));
    let events = h.ok("dan", press());
    assert_eq!(
        events,
        vec![Event::PipelineStarted {
            phase: "pre".into(),
            item: "tests".into()
        }]
    );
    let r = h.run.report("pre", "tests").unwrap();
    assert_eq!(
        (r.status, r.by.as_str()),
        (ReportStatus::Running, "GitHub Actions")
    );
    assert_eq!(r.note.as_deref(), Some("started by Dan"));
    assert!(h.ok("alice", press()).is_empty(), "running already");
    // An item without a pipeline has nothing to run.
    let other = Action::StartPipeline {
        phase: "pre".into(),
        item: "changelog".into(),
        runner: String::new(),
    };
    assert_eq!(
        h.refused("dan", other),
        Refusal::NoPipeline("Update the changelog".into())
    );
}
