//! Discord's part of `tminus doctor` (and of `serve`'s start-up check).
//! Every call is a `GET`: the bot user (`/users/@me`) for the token, the
//! application (`/oauth2/applications/@me`) for its id, public key and
//! interactions URL, each channel of the bot file with its server, roles
//! and the bot's membership to work out what the bot may do there (as
//! Discord does: server roles, then the channel's overwrites for everyone,
//! the bot's roles and the bot), each person's user, and the registered
//! commands.

use std::collections::BTreeSet;

use serde_json::Value;
use serenity::http::Route;
use serenity::model::id::{ApplicationId, ChannelId, GuildId, UserId};
use serenity::model::permissions::Permissions;

use super::invite;
use super::rest::Rest;
use super::DiscordSettings;
use crate::config::Config;
use crate::doctor::{Check, Depth};
use crate::domain::Platform;
use crate::engine::command::SLASH_COMMANDS;

const NETWORK_FIX: &str =
    "check the network and any proxy between tminus and Discord (and DISCORD_API_URL if set)";

fn snowflake(id: &str) -> Option<u64> {
    id.trim().parse::<u64>().ok().filter(|n| *n > 0)
}

fn bits(v: &Value) -> Permissions {
    Permissions::from_bits_truncate(v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// The checks, in order; after a token that does not work, only that.
pub async fn checks(settings: &DiscordSettings, config: &Config, depth: Depth) -> Vec<Check> {
    let rest = match Rest::new(settings) {
        Ok(r) => r,
        Err(e) => return vec![Check::fail(format!("{e:#}"), "correct DISCORD_API_URL")],
    };
    let mut out = Vec::new();
    let me = match rest.get(Route::UserMe).await {
        Err(e) => return vec![Check::fail(e, NETWORK_FIX)],
        Ok((200, me)) => me,
        Ok((401, _)) => {
            return vec![Check::fail(
                "Discord does not accept DISCORD_TOKEN (401)",
                "reset the bot's token under Bot at discord.com/developers/applications and put \
                 it in DISCORD_TOKEN",
            )]
        }
        Ok((status, body)) => return vec![refused("/users/@me", status, &body)],
    };
    let bot_id = me["id"].as_str().unwrap_or_default().to_string();
    let bot_name = me["username"].as_str().unwrap_or("tminus").to_string();
    out.push(Check::pass(format!(
        "the bot token works: {bot_name} ({bot_id})"
    )));

    let application = match rest.get(Route::Oauth2ApplicationCurrent).await {
        Err(e) => {
            out.push(Check::fail(e, NETWORK_FIX));
            return out;
        }
        Ok((200, app)) => app,
        Ok((status, body)) => {
            out.push(refused("/oauth2/applications/@me", status, &body));
            return out;
        }
    };
    let app_id = application["id"].as_str().unwrap_or_default().to_string();
    out.push(application_id(settings, &app_id));
    out.push(way_in(settings, &application));

    // The server of the channels: people are looked up as its members.
    let mut guild = None;
    if let Some(pair) = config.channels_for(Platform::Discord) {
        let mut seen = BTreeSet::new();
        for (purpose, id) in [
            ("deployments", &pair.deployments),
            ("incidents", &pair.incidents),
        ] {
            if seen.insert(id.clone()) {
                let check = channel(&rest, purpose, id, &bot_id, &app_id, config, &mut guild);
                out.push(check.await);
            }
        }
    } else {
        out.push(Check::fail(
            "the bot file has no [channels.discord]",
            "add [channels.discord] with deployments and incidents channel ids",
        ));
    }
    out.extend(people(&rest, config, guild).await);
    if depth == Depth::Full {
        out.push(commands(&rest, &app_id, config.discord_guild.as_deref()).await);
    }
    out
}

fn refused(path: &str, status: u16, body: &Value) -> Check {
    Check::fail(
        format!(
            "Discord answered GET {path} with {status}: {}",
            body["message"].as_str().unwrap_or("no message")
        ),
        NETWORK_FIX,
    )
}

fn application_id(settings: &DiscordSettings, actual: &str) -> Check {
    match settings.application_id.as_deref().map(str::trim) {
        None => Check::fail(
            "DISCORD_APPLICATION_ID is not set, so tminus cannot register /deploy and /oncall",
            format!("set DISCORD_APPLICATION_ID={actual}"),
        ),
        Some(id) if id == actual => Check::pass(format!(
            "DISCORD_APPLICATION_ID is the token's application ({id})"
        )),
        Some(id) => Check::fail(
            format!(
                "DISCORD_APPLICATION_ID is {id}, but the token belongs to application {actual}"
            ),
            format!("set DISCORD_APPLICATION_ID={actual}, or use the token of application {id}"),
        ),
    }
}

/// The public key matches the application's, and the mode agrees with
/// where Discord sends interactions.
fn way_in(settings: &DiscordSettings, application: &Value) -> Check {
    let verify_key = application["verify_key"].as_str().unwrap_or_default();
    let endpoint = application["interactions_endpoint_url"]
        .as_str()
        .filter(|u| !u.is_empty());
    match (settings.public_key.as_deref(), endpoint) {
        (Some(key), _) if !key.trim().eq_ignore_ascii_case(verify_key) => Check::fail(
            "DISCORD_PUBLIC_KEY is not the application's public key: every interaction would be refused",
            format!("set DISCORD_PUBLIC_KEY={verify_key} (General Information → Public Key)"),
        ),
        (Some(_), Some(url)) => Check::pass(format!(
            "DISCORD_PUBLIC_KEY matches; Discord sends interactions to {url}"
        )),
        (Some(_), None) => Check::fail(
            "DISCORD_PUBLIC_KEY is set (endpoint mode), but the application has no Interactions \
             Endpoint URL, so Discord sends interactions over the gateway, which tminus does not \
             open in this mode",
            "set Interactions Endpoint URL to https://YOUR-HOST/discord/interactions under General \
             Information, or unset DISCORD_PUBLIC_KEY for gateway mode",
        ),
        (None, Some(url)) => Check::fail(
            format!(
                "Discord sends interactions to {url}, but DISCORD_PUBLIC_KEY is not set, so tminus \
                 serves no interactions endpoint"
            ),
            format!(
                "set DISCORD_PUBLIC_KEY={verify_key}, or clear the Interactions Endpoint URL for \
                 gateway mode"
            ),
        ),
        (None, None) => Check::pass("gateway mode: Discord sends interactions over the gateway"),
    }
}

/// One channel's check; `server` takes the channel's server once it is
/// known, unless it holds one already.
async fn channel(
    rest: &Rest,
    purpose: &str,
    id: &str,
    bot_id: &str,
    app_id: &str,
    config: &Config,
    server: &mut Option<u64>,
) -> Check {
    let key = format!("[channels.discord] {purpose}");
    let copy = "Developer Mode on, right-click the channel → Copy Channel ID";
    let Some(channel_id) = snowflake(id) else {
        return Check::fail(
            format!("{key} = {id:?} is not a channel id"),
            format!("put the channel's id there ({copy})"),
        );
    };
    let invite_fix = match snowflake(app_id) {
        Some(app) => format!(
            "add the bot to the server with {} (`tminus discord-invite`)",
            invite::url(app, None)
        ),
        None => "add the bot to the server (`tminus discord-invite`)".to_string(),
    };
    let channel = match rest.get(Route::Channel { channel_id: ChannelId::new(channel_id) }).await {
        Err(e) => return Check::fail(e, NETWORK_FIX),
        Ok((200, c)) => c,
        Ok((404, _)) => {
            return Check::fail(
                format!("the {purpose} channel {id} does not exist"),
                format!("put the right id in {key} ({copy})"),
            )
        }
        Ok((403, _)) => {
            return Check::fail(
                format!("the bot cannot see the {purpose} channel {id}: it is not in that server, or may not view the channel"),
                format!("{invite_fix}, and let its role View Channel there"),
            )
        }
        Ok((status, body)) => return refused(&format!("/channels/{id}"), status, &body),
    };
    let name = channel["name"].as_str().unwrap_or(id).to_string();
    // 0 a text channel, 5 an announcement channel: both take messages and
    // threads started from them.
    if !matches!(channel["type"].as_u64(), Some(0 | 5)) {
        return Check::fail(
            format!("the {purpose} channel #{name} is not a text channel"),
            format!("name a text channel in {key}"),
        );
    }
    let Some(guild_id) = channel["guild_id"].as_str().and_then(snowflake) else {
        return Check::fail(
            format!("{key} = {id} is not a server channel"),
            format!("name a text channel of your server in {key}"),
        );
    };
    if let Some(guild) = config.discord_guild.as_deref() {
        if snowflake(guild) != Some(guild_id) {
            return Check::fail(
                format!("the {purpose} channel #{name} is in server {guild_id}, but [discord] guild is {guild}"),
                "make [discord] guild the server the channels are in (right-click the server → Copy Server ID)",
            );
        }
    }
    server.get_or_insert(guild_id);
    let guild = rest
        .get(Route::Guild {
            guild_id: GuildId::new(guild_id),
        })
        .await;
    let member = match snowflake(bot_id) {
        Some(bot) => {
            rest.get(Route::GuildMember {
                guild_id: GuildId::new(guild_id),
                user_id: UserId::new(bot),
            })
            .await
        }
        None => Ok((404, Value::Null)),
    };
    let (guild, member) = match (guild, member) {
        (Err(e), _) | (_, Err(e)) => return Check::fail(e, NETWORK_FIX),
        (Ok((200, g)), Ok((200, m))) => (g, m),
        (Ok((200, _)), Ok((404, _))) | (Ok((403 | 404, _)), _) => {
            return Check::fail(
                format!("the bot is not a member of the server of #{name}"),
                invite_fix,
            )
        }
        (Ok((200, _)), Ok((status, body))) => {
            return refused(
                &format!("/guilds/{guild_id}/members/{bot_id}"),
                status,
                &body,
            )
        }
        (Ok((status, body)), _) => return refused(&format!("/guilds/{guild_id}"), status, &body),
    };
    let granted = permissions_in(&guild, &member, &channel, bot_id);
    let missing = invite::missing(granted);
    if missing.is_empty() {
        return Check::pass(format!(
            "the {purpose} channel #{name} exists and the bot may post and open threads there"
        ));
    }
    Check::fail(
        format!("in #{name} the bot lacks {}", missing.join(", ")),
        format!(
            "grant {} to the bot's role (Server Settings → Roles) or in #{name}'s permissions, or \
             re-invite it with `tminus discord-invite`",
            missing.join(", ")
        ),
    )
}

/// What `user` may do in `channel`: the server's roles, then the
/// channel's overwrites for everyone, for the user's roles, for the user.
pub fn permissions_in(guild: &Value, member: &Value, channel: &Value, user: &str) -> Permissions {
    if guild["owner_id"].as_str() == Some(user) {
        return Permissions::all();
    }
    let guild_id = guild["id"].as_str().unwrap_or_default();
    let member_roles: BTreeSet<&str> = member["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut base = Permissions::empty();
    for role in guild["roles"].as_array().into_iter().flatten() {
        let id = role["id"].as_str().unwrap_or_default();
        if id == guild_id || member_roles.contains(id) {
            base |= bits(&role["permissions"]);
        }
    }
    if base.contains(Permissions::ADMINISTRATOR) {
        return Permissions::all();
    }
    let overwrites: Vec<&Value> = channel["permission_overwrites"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let apply = |perms: Permissions, matching: &dyn Fn(&Value) -> bool| {
        let (allow, deny) = overwrites
            .iter()
            .filter(|o| matching(o))
            .fold((Permissions::empty(), Permissions::empty()), |(a, d), o| {
                (a | bits(&o["allow"]), d | bits(&o["deny"]))
            });
        (perms & !deny) | allow
    };
    let is_role = |o: &Value| o["type"].as_u64() == Some(0) || o["type"].as_str() == Some("0");
    let id_of = |o: &Value| o["id"].as_str().unwrap_or_default().to_string();
    let perms = apply(base, &|o| is_role(o) && id_of(o) == guild_id);
    let perms = apply(perms, &|o| {
        is_role(o) && id_of(o) != guild_id && member_roles.contains(id_of(o).as_str())
    });
    apply(perms, &|o| !is_role(o) && id_of(o) == user)
}

/// Each person's id: a member of the channels' server (a page is a
/// direct message, which needs a shared server), else at least a user.
async fn people(rest: &Rest, config: &Config, guild: Option<u64>) -> Vec<Check> {
    let mut out = Vec::new();
    let mut found = 0;
    for person in config.directory.people.values() {
        let Some(id) = person.discord.as_deref() else {
            continue;
        };
        let key = person.id.as_str();
        let fix = format!(
            "with Developer Mode on, right-click {} → Copy User ID, and put it in [people.{key}] discord",
            person.name
        );
        let Some(user) = snowflake(id) else {
            out.push(Check::fail(
                format!(
                    "{} ([people.{key}] discord = {id:?}) is not a Discord user id",
                    person.name
                ),
                fix,
            ));
            continue;
        };
        let user_id = UserId::new(user);
        let (route, path) = match guild {
            Some(g) => (
                Route::GuildMember {
                    guild_id: GuildId::new(g),
                    user_id,
                },
                format!("/guilds/{g}/members/{id}"),
            ),
            None => (Route::User { user_id }, format!("/users/{id}")),
        };
        match rest.get(route).await {
            Err(e) => {
                out.push(Check::fail(e, NETWORK_FIX));
                return out;
            }
            Ok((200, _)) => found += 1,
            Ok((404, _)) if guild.is_some() => out.push(Check::fail(
                format!(
                    "{} ([people.{key}] discord = {id}) is not a member of the channels' server, so cannot be paged",
                    person.name
                ),
                format!("invite {} to the server, or {fix}", person.name),
            )),
            Ok((404, _)) => out.push(Check::fail(
                format!(
                    "{} ([people.{key}] discord = {id}): no such Discord user",
                    person.name
                ),
                fix,
            )),
            Ok((status, body)) => {
                out.push(refused(&path, status, &body));
                return out;
            }
        }
    }
    if out.is_empty() {
        out.push(Check::pass(format!(
            "all {found} people with a Discord id are in Discord{}",
            if guild.is_some() {
                " and in the server"
            } else {
                ""
            }
        )));
    }
    out
}

async fn commands(rest: &Rest, app_id: &str, guild: Option<&str>) -> Check {
    let Some(app) = snowflake(app_id) else {
        return Check::fail("the application has no id", NETWORK_FIX);
    };
    let application_id = ApplicationId::new(app);
    let (route, scope, path) = match guild.and_then(snowflake) {
        Some(g) => (
            Route::GuildCommands {
                application_id,
                guild_id: GuildId::new(g),
            },
            format!("in server {g}"),
            format!("/applications/{app}/guilds/{g}/commands"),
        ),
        None => (
            Route::Commands { application_id },
            "globally".to_string(),
            format!("/applications/{app}/commands"),
        ),
    };
    let registered = match rest.get(route).await {
        Err(e) => return Check::fail(e, NETWORK_FIX),
        Ok((200, list)) => list,
        Ok((status, body)) => return refused(&path, status, &body),
    };
    let fix = "start `tminus serve` once with DISCORD_APPLICATION_ID set: it registers them at \
               every start (set [discord] guild to see them at once; global ones take up to an hour)";
    let options = |command: &Value| -> BTreeSet<String> {
        command["options"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["name"].as_str().map(str::to_string))
            .collect()
    };
    let found = |name: &str| {
        registered
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
    };
    let missing: Vec<String> = SLASH_COMMANDS
        .iter()
        .filter(|c| found(c.name).is_none())
        .map(|c| format!("/{}", c.name))
        .collect();
    if !missing.is_empty() {
        return Check::fail(
            format!("{} not registered {scope}", missing.join(" and ")),
            fix,
        );
    }
    // Registered by an older tminus: subcommands it lacks.
    let definitions = super::commands::definitions();
    let mut stale = Vec::new();
    for wanted in definitions.as_array().into_iter().flatten() {
        let name = wanted["name"].as_str().unwrap_or_default();
        let have = found(name).map(options).unwrap_or_default();
        let lacking: Vec<String> = options(wanted).difference(&have).cloned().collect();
        if !lacking.is_empty() {
            stale.push(format!("/{name} lacks {}", lacking.join(", ")));
        }
    }
    if stale.is_empty() {
        return Check::pass(format!("/deploy and /oncall are registered {scope}"));
    }
    Check::fail(
        format!(
            "the commands registered {scope} are an older set: {}",
            stale.join("; ")
        ),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn guild() -> Value {
        json!({"id": "10", "owner_id": "1", "roles": [
            {"id": "10", "permissions": (Permissions::VIEW_CHANNEL | Permissions::SEND_MESSAGES).bits().to_string()},
            {"id": "20", "permissions": (Permissions::EMBED_LINKS | Permissions::CREATE_PUBLIC_THREADS | Permissions::SEND_MESSAGES_IN_THREADS).bits().to_string()},
            {"id": "30", "permissions": Permissions::ADMINISTRATOR.bits().to_string()},
        ]})
    }

    #[test]
    fn roles_add_up_and_overwrites_apply_everyone_then_roles_then_the_member() {
        let member = json!({"roles": ["20"]});
        let open = json!({"permission_overwrites": []});
        assert!(invite::missing(permissions_in(&guild(), &member, &open, "5")).is_empty());

        let deny = |bits: Permissions| bits.bits().to_string();
        let closed = json!({"permission_overwrites": [
            {"id": "10", "type": 0, "allow": "0", "deny": deny(Permissions::SEND_MESSAGES)},
        ]});
        assert_eq!(
            invite::missing(permissions_in(&guild(), &member, &closed, "5")),
            ["Send Messages"]
        );
        // A role's allow wins over everyone's deny; a member's deny wins over both.
        let reopened = json!({"permission_overwrites": [
            {"id": "10", "type": 0, "allow": "0", "deny": deny(Permissions::SEND_MESSAGES)},
            {"id": "20", "type": 0, "allow": deny(Permissions::SEND_MESSAGES), "deny": "0"},
        ]});
        assert!(invite::missing(permissions_in(&guild(), &member, &reopened, "5")).is_empty());
        let member_denied = json!({"permission_overwrites": [
            {"id": "20", "type": 0, "allow": deny(Permissions::SEND_MESSAGES), "deny": "0"},
            {"id": "5", "type": 1, "allow": "0", "deny": deny(Permissions::EMBED_LINKS)},
        ]});
        assert_eq!(
            invite::missing(permissions_in(&guild(), &member, &member_denied, "5")),
            ["Embed Links"]
        );
    }

    #[test]
    fn the_owner_and_administrators_may_do_everything() {
        let closed = json!({"permission_overwrites": [
            {"id": "10", "type": 0, "allow": "0", "deny": Permissions::all().bits().to_string()},
        ]});
        let admin = json!({"roles": ["30"]});
        assert!(invite::missing(permissions_in(&guild(), &admin, &closed, "5")).is_empty());
        let nobody = json!({"roles": []});
        assert!(invite::missing(permissions_in(&guild(), &nobody, &closed, "1")).is_empty());
        assert!(!invite::missing(permissions_in(&guild(), &nobody, &closed, "5")).is_empty());
    }
}
