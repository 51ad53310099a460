//! Authentication and access rules of the embedded broker: exactly the users
//! and rules its builder was given, from no file or outside store.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Publish,
    Subscribe,
}

#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub(super) user: String,
    pub(super) filter: String,
    pub(super) access: Access,
}

/// Username/password check and topic rules, in place of `mqtt5`'s providers:
/// its `PasswordAuthProvider` hashes with Argon2 on every connect (slow in
/// debug builds), and its `AclManager` lets an `a/+` rule grant an `a/#`
/// subscription and checks shared subscriptions with their `$share/` prefix.
pub(super) struct EmbeddedAuth {
    /// Empty: everyone may connect, and the username sent is taken as is.
    pub(super) users: HashMap<String, String>,
    /// `None`: everything is allowed; `Some`: only what a rule allows.
    pub(super) acl: Option<Vec<Rule>>,
}

impl EmbeddedAuth {
    fn allowed(&self, access: Access, client_id: &str, user: Option<&str>, topic: &str) -> bool {
        let Some(rules) = &self.acl else {
            return true;
        };
        let topic = match access {
            Access::Publish => topic,
            Access::Subscribe => mqtt5::strip_shared_subscription_prefix(topic),
        };
        rules.iter().filter(|rule| rule.access == access).any(|rule| {
            let user_matches = rule.user == "*" || Some(rule.user.as_str()) == user;
            user_matches
                && expand(&rule.filter, user, client_id).is_some_and(|filter| match access {
                    Access::Publish => mqtt5::topic_matches_filter(topic, &filter),
                    Access::Subscribe => filter_within(topic, &filter),
                })
        })
    }
}

/// `filter` with `%u` and `%c` replaced; `None` if one is needed but missing
/// or unsafe in a topic.
pub(super) fn expand(filter: &str, user: Option<&str>, client_id: &str) -> Option<String> {
    fn safe(value: &str) -> bool {
        !value.is_empty() && !value.contains(['/', '+', '#'])
    }
    let mut out = filter.to_string();
    if out.contains("%u") {
        out = out.replace("%u", user.filter(|u| safe(u))?);
    }
    if out.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    Some(out)
}

/// Whether every topic that `requested` matches is matched by `allowed`.
pub(super) fn filter_within(requested: &str, allowed: &str) -> bool {
    if requested.starts_with('$') && (allowed.starts_with('+') || allowed.starts_with('#')) {
        return false;
    }
    let mut req = requested.split('/');
    let mut all = allowed.split('/');
    loop {
        match (req.next(), all.next()) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some("#"), Some(_)) => return false,
            (Some("+"), Some(a)) => {
                if a != "+" {
                    return false;
                }
            }
            (Some(r), Some(a)) => {
                if a != "+" && a != r {
                    return false;
                }
            }
        }
    }
}

pub(super) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthProvider for EmbeddedAuth {
    fn authenticate<'a>(
        &'a self,
        connect: &'a ConnectPacket,
        _client_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = mqtt5::Result<AuthResult>> + Send + 'a>> {
        let result = if self.users.is_empty() {
            match &connect.username {
                Some(user) => AuthResult::success_with_user(user.clone()),
                None => AuthResult::success(),
            }
        } else {
            match (&connect.username, &connect.password) {
                (Some(user), Some(password))
                    if self
                        .users
                        .get(user)
                        .is_some_and(|expected| same_secret(expected.as_bytes(), password)) =>
                {
                    AuthResult::success_with_user(user.clone())
                }
                (None, _) => AuthResult::fail_with_reason(
                    ReasonCode::NotAuthorized,
                    "this broker does not accept anonymous clients",
                ),
                _ => AuthResult::fail(ReasonCode::BadUsernameOrPassword),
            }
        };
        Box::pin(async move { Ok(result) })
    }

    fn authorize_publish<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let allowed = self.allowed(Access::Publish, client_id, user_id, topic);
        Box::pin(async move { allowed })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic_filter: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let allowed = self.allowed(Access::Subscribe, client_id, user_id, topic_filter);
        Box::pin(async move { allowed })
    }
}
