//! The OAuth2 link that adds tminus to a Discord server
//! (`tminus discord-invite`), with exactly the scopes and channel
//! permissions it needs. `doctor` checks the deployments and incidents
//! channels against the same [`NEEDED`] list.

use serenity::model::permissions::Permissions;

/// The OAuth2 scopes: a bot user, and its slash commands.
pub const SCOPES: &[&str] = &["bot", "applications.commands"];

/// Each channel permission tminus needs, and what for.
pub const NEEDED: &[(Permissions, &str)] = &[
    (
        Permissions::VIEW_CHANNEL,
        "see the deployments and incidents channels",
    ),
    (
        Permissions::SEND_MESSAGES,
        "post a run's root message and incident cards",
    ),
    (
        Permissions::CREATE_PUBLIC_THREADS,
        "open a run's thread from its root message",
    ),
    (
        Permissions::SEND_MESSAGES_IN_THREADS,
        "post phase cards and notices in the thread",
    ),
    (
        Permissions::EMBED_LINKS,
        "cards are embeds; without it Discord drops them",
    ),
];

/// All of [`NEEDED`] as one set of bits.
pub fn permissions() -> Permissions {
    NEEDED
        .iter()
        .fold(Permissions::empty(), |all, (p, _)| all | *p)
}

/// The names of the permissions of [`NEEDED`] that `granted` lacks.
pub fn missing(granted: Permissions) -> Vec<&'static str> {
    if granted.contains(Permissions::ADMINISTRATOR) {
        return Vec::new();
    }
    NEEDED
        .iter()
        .filter(|(p, _)| !granted.contains(*p))
        .flat_map(|(p, _)| p.get_permission_names())
        .collect()
}

/// Why an application id cannot be used.
pub fn check_application_id(id: &str) -> Result<u64, String> {
    match id.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{id}` is not an application id: copy the Application ID from General Information \
             at discord.com/developers/applications"
        )),
    }
}

/// The invite link for `application_id`, optionally for one server.
pub fn url(application_id: u64, guild: Option<u64>) -> String {
    let mut url = format!(
        "https://discord.com/oauth2/authorize?client_id={application_id}&scope={}&permissions={}",
        SCOPES.join("%20"),
        permissions().bits()
    );
    if let Some(guild) = guild {
        url.push_str(&format!("&guild_id={guild}&disable_guild_select=true"));
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_asks_for_the_bot_its_commands_and_exactly_the_needed_bits() {
        let link = url(1234, None);
        assert!(link.starts_with("https://discord.com/oauth2/authorize?client_id=1234&"));
        assert!(link.contains("scope=bot%20applications.commands"));
        // View Channel 1<<10, Send Messages 1<<11, Embed Links 1<<14,
        // Create Public Threads 1<<35, Send Messages in Threads 1<<38.
        let bits: u64 = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 35) | (1 << 38);
        assert!(link.ends_with(&format!("&permissions={bits}")), "{link}");
        assert!(url(1234, Some(99)).ends_with("&guild_id=99&disable_guild_select=true"));
    }

    #[test]
    fn missing_names_what_a_channel_lacks_and_an_administrator_lacks_nothing() {
        let some = Permissions::VIEW_CHANNEL | Permissions::SEND_MESSAGES;
        assert_eq!(
            missing(some),
            [
                "Create Public Threads",
                "Send Messages in Threads",
                "Embed Links"
            ]
        );
        assert!(missing(Permissions::ADMINISTRATOR).is_empty());
        assert!(missing(permissions()).is_empty());
    }

    #[test]
    fn application_ids_are_positive_numbers() {
        assert_eq!(check_application_id(" 42 "), Ok(42));
        assert!(check_application_id("0").is_err());
        assert!(check_application_id("my-app").is_err());
    }
}
