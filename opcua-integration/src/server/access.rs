//! Who is calling, and what their role lets them do.
//!
//! A session's identity (anonymous, a user name, a user certificate) maps to one [`UserRole`]. The default policy
//! of Part 3 §4.9's well-known roles, reduced to what a machine needs: anonymous callers and observers read and
//! browse; operators also write and call; administrators may do everything, including changing the server's
//! certificates and trust lists. Nodes can demand a higher role than the default (see the address space).

use std::fmt;
use std::sync::Arc;

use opcua_types::NodeId;

use crate::channel::policy::SecurityMode;
use crate::channel::secure_channel::Now;

/// A caller's role, ordered from least to most privileged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// No identity: read and browse only.
    #[default]
    Anonymous,
    /// An authenticated user without further rights: read and browse only.
    Observer,
    /// May also write variables and call methods.
    Operator,
    /// May do everything.
    Administrator,
}

impl UserRole {
    /// The role's name as configuration files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Anonymous => "anonymous",
            UserRole::Observer => "observer",
            UserRole::Operator => "operator",
            UserRole::Administrator => "administrator",
        }
    }

    /// Whether this role is at least `required`.
    pub fn allows(self, required: UserRole) -> bool {
        self >= required
    }
}

impl fmt::Display for UserRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity behind a session once ActivateSession accepted its user token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user name, the user certificate's subject, or "anonymous".
    pub name: String,
    /// What the principal may do.
    pub role: UserRole,
}

impl Principal {
    /// The anonymous caller.
    pub fn anonymous() -> Self {
        Principal { name: "anonymous".into(), role: UserRole::Anonymous }
    }
}

/// What every service implementation learns about the request it serves.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The activated session's identity.
    pub principal: Arc<Principal>,
    /// The session's id (not its secret authentication token).
    pub session_id: NodeId,
    /// The time the request is served at.
    pub now: Now,
    /// The security mode of the channel the request came over: certificate and trust list management demands
    /// SignAndEncrypt (Part 12 §7.3).
    pub security_mode: SecurityMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(UserRole::Administrator.allows(UserRole::Operator));
        assert!(UserRole::Operator.allows(UserRole::Operator));
        assert!(!UserRole::Observer.allows(UserRole::Operator));
        assert!(!UserRole::Anonymous.allows(UserRole::Observer));
        assert_eq!(UserRole::Operator.to_string(), "operator");
    }
}
