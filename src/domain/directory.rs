//! People and roles from the bot file, and the lookups the engine needs:
//! who is this platform user, who is in this role, what is their name.

use std::collections::BTreeMap;

use super::{PersonId, Platform, RoleId};

#[derive(Clone, Debug, PartialEq)]
pub struct Person {
    pub id: PersonId,
    pub name: String,
    pub slack: Option<String>,
    pub discord: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub id: RoleId,
    pub name: String,
    pub members: Vec<PersonId>,
}

/// Everyone tminus knows. Built by the configuration loader, which has
/// already checked that every role member is a known person.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    pub people: BTreeMap<PersonId, Person>,
    pub roles: BTreeMap<RoleId, Role>,
}

impl Directory {
    /// The person behind a platform user id. In the shell the user id is the
    /// person's key.
    pub fn resolve(&self, platform: Platform, user: &str) -> Option<&Person> {
        self.people.values().find(|p| match platform {
            Platform::Slack => p.slack.as_deref() == Some(user),
            Platform::Discord => p.discord.as_deref() == Some(user),
            Platform::Shell => p.id.as_str() == user,
        })
    }

    pub fn person(&self, id: &PersonId) -> Option<&Person> {
        self.people.get(id)
    }

    /// A person's display name, or their key if they have left the bot file.
    pub fn name<'a>(&'a self, id: &'a PersonId) -> &'a str {
        self.people.get(id).map_or(id.as_str(), |p| p.name.as_str())
    }

    pub fn role(&self, id: &RoleId) -> Option<&Role> {
        self.roles.get(id)
    }

    pub fn role_name<'a>(&'a self, id: &'a RoleId) -> &'a str {
        self.roles.get(id).map_or(id.as_str(), |r| r.name.as_str())
    }

    pub fn is_member(&self, person: &PersonId, role: &RoleId) -> bool {
        self.roles
            .get(role)
            .is_some_and(|r| r.members.contains(person))
    }

    /// Display names of a role's members, for refusals that say whom to ask.
    pub fn member_names(&self, role: &RoleId) -> Vec<String> {
        self.roles.get(role).map_or_else(Vec::new, |r| {
            r.members.iter().map(|m| self.name(m).to_string()).collect()
        })
    }
}
