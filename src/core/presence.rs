//! Presence rules: which channels keep it and who may ask.

use super::auth::Claims;
use super::channel::Channel;
use super::config::Config;
use super::error::ApiError;

/// The channel of a `presence` request (a socket's or `GET …/presence`):
/// `FORBIDDEN` outside the token's `channels` claim, `INVALID_MESSAGE` for a
/// channel that keeps no presence.
pub fn channel_for(claims: &Claims, name: &str, config: &Config) -> Result<Channel, ApiError> {
    let channel = Channel::parse(name, config)?;
    if !claims.allows(&channel, false) {
        return Err(ApiError::forbidden_channel(channel.name()));
    }
    if !channel.has_presence(config) {
        return Err(ApiError::invalid(
            "channel",
            format!(
                "channel '{name}' keeps no presence; presence is kept for the namespaces: {}",
                config.presence_namespaces.join(", ")
            ),
        )
        .with("channel", name));
    }
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::Scopes;
    use crate::core::error::ErrorCode;

    fn claims(channels: &[&str]) -> Claims {
        Claims {
            sub: None,
            exp: None,
            scopes: Scopes {
                subscribe: true,
                publish: false,
                admin: false,
            },
            channels: Some(channels.iter().map(|c| (*c).to_owned()).collect()),
        }
    }

    #[test]
    fn presence_needs_the_claim_and_a_presence_namespace() {
        let c = Config::default();
        let chat = claims(&["conversation:*", "accidents"]);
        assert!(channel_for(&chat, "conversation:c1", &c).is_ok());
        let code = |r: Result<Channel, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(channel_for(&claims(&["alerts"]), "conversation:c1", &c)),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(channel_for(&chat, "accidents", &c)),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(channel_for(&chat, "nope", &c)),
            ErrorCode::ChannelNotFound
        );
    }
}
