//! Who may do what: roles, permissions and the credentials that prove who someone is. No HTTP
//! here; `api/` turns requests into calls of these functions.

pub mod oauth;
pub mod password;
pub mod secret;
pub mod totp;

use std::fmt;
use std::str::FromStr;

/// A role in an organisation. Permissions are not a ladder: an auditor reads the audit trail
/// but cannot approve; an approver approves but cannot read the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Everything, including making and removing other owners.
    Owner,
    /// Everything except owner changes.
    Admin,
    /// Decides approval requests; reads policies and agents.
    Approver,
    /// Reads everything (audit trail, members, policies); changes nothing.
    Auditor,
    /// Reads the organisation, its policies and agents.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Approver,
        Role::Auditor,
        Role::Viewer,
    ];

    /// The role's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }

    /// What the role may do.
    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            Role::Owner | Role::Admin => PermissionSet::all(),
            Role::Approver => PermissionSet::of(&[OrgRead, PolicyRead, ApprovalDecide, DeviceRead]),
            Role::Auditor => PermissionSet::of(&[
                OrgRead,
                MemberRead,
                AuditRead,
                PolicyRead,
                DeviceRead,
                SecretsRead,
            ]),
            Role::Viewer => PermissionSet::of(&[OrgRead, PolicyRead, DeviceRead]),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}`; expected owner, admin, approver, auditor or viewer")
            })
    }
}

/// One thing a caller may be allowed to do in an organisation. API tokens carry a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Permission {
    /// See the organisation's settings.
    OrgRead = 0,
    /// Change the organisation's settings (name, 2FA rule).
    OrgManage,
    /// List members and their roles.
    MemberRead,
    /// Add, remove and change the role of members.
    MemberManage,
    /// Create, list and revoke API tokens.
    TokenManage,
    /// Read the audit trail.
    AuditRead,
    /// Read policies, their versions and diffs; explain a call.
    PolicyRead,
    /// Publish policy versions and roll back.
    PolicyWrite,
    /// Approve or deny a held tool call.
    ApprovalDecide,
    /// See enrolled devices and their health.
    DeviceRead,
    /// Enrol, label, revoke and re-key devices.
    DeviceManage,
    /// See secrets' metadata (never values: the control plane has none) and the org key's state.
    SecretsRead,
    /// Put and remove secrets (sealed on the caller's side).
    SecretsWrite,
    /// Set up, grant, rotate and verify the organisation's secrets key; manage custodians.
    SecretsKeys,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 14] = [
        Permission::OrgRead,
        Permission::OrgManage,
        Permission::MemberRead,
        Permission::MemberManage,
        Permission::TokenManage,
        Permission::AuditRead,
        Permission::PolicyRead,
        Permission::PolicyWrite,
        Permission::ApprovalDecide,
        Permission::DeviceRead,
        Permission::DeviceManage,
        Permission::SecretsRead,
        Permission::SecretsWrite,
        Permission::SecretsKeys,
    ];

    /// The name used in token scopes and the API, e.g. `policy:write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgRead => "org:read",
            Permission::OrgManage => "org:manage",
            Permission::MemberRead => "member:read",
            Permission::MemberManage => "member:manage",
            Permission::TokenManage => "token:manage",
            Permission::AuditRead => "audit:read",
            Permission::PolicyRead => "policy:read",
            Permission::PolicyWrite => "policy:write",
            Permission::ApprovalDecide => "approval:decide",
            Permission::DeviceRead => "device:read",
            Permission::DeviceManage => "device:manage",
            Permission::SecretsRead => "secrets:read",
            Permission::SecretsWrite => "secrets:write",
            Permission::SecretsKeys => "secrets:keys",
        }
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Permission, String> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope `{s}`; expected one of {}",
                    Permission::ALL.map(Permission::as_str).join(", ")
                )
            })
    }
}

/// A set of [`Permission`]s (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u32);

impl PermissionSet {
    /// Every permission.
    pub fn all() -> PermissionSet {
        PermissionSet::of(&Permission::ALL)
    }

    /// Exactly these.
    pub fn of(perms: &[Permission]) -> PermissionSet {
        PermissionSet(perms.iter().fold(0, |acc, p| acc | (1 << *p as u8)))
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << p as u8) != 0
    }

    /// Both sets' common permissions.
    pub fn intersect(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 & other.0)
    }

    /// Whether every permission of `self` is in `other`.
    pub fn is_subset(self, other: PermissionSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// The permissions, in [`Permission::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// Space-separated names (the stored form of token scopes).
    pub fn to_scope_string(self) -> String {
        self.iter()
            .map(Permission::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Parses the stored form; unknown names are an error.
    pub fn parse_scopes(s: &str) -> Result<PermissionSet, String> {
        let perms = s
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<Permission>, _>>()?;
        Ok(PermissionSet::of(&perms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The role matrix, written out: changing what a role may do must change this table too.
    #[test]
    fn role_permissions_are_exactly_these() {
        let expected: [(Role, &str); 5] = [
            (
                Role::Owner,
                "org:read org:manage member:read member:manage token:manage audit:read policy:read policy:write approval:decide device:read device:manage secrets:read secrets:write secrets:keys",
            ),
            (
                Role::Admin,
                "org:read org:manage member:read member:manage token:manage audit:read policy:read policy:write approval:decide device:read device:manage secrets:read secrets:write secrets:keys",
            ),
            (
                Role::Approver,
                "org:read policy:read approval:decide device:read",
            ),
            (
                Role::Auditor,
                "org:read member:read audit:read policy:read device:read secrets:read",
            ),
            (Role::Viewer, "org:read policy:read device:read"),
        ];
        for (role, perms) in expected {
            assert_eq!(role.permissions().to_scope_string(), perms, "{role}");
        }
    }

    #[test]
    fn roles_and_scopes_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        let set = Role::Auditor.permissions();
        assert_eq!(
            PermissionSet::parse_scopes(&set.to_scope_string()).unwrap(),
            set
        );
        assert!(set.contains(Permission::AuditRead));
        assert!(!set.contains(Permission::ApprovalDecide));
        assert!(!Role::Approver.permissions().contains(Permission::AuditRead));
        assert!(
            Role::Viewer
                .permissions()
                .is_subset(Role::Auditor.permissions())
        );
        assert!(PermissionSet::parse_scopes("policy:read bogus").is_err());
    }
}
