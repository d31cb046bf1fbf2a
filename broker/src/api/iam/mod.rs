//! Identity administration (`AirlockIAM.*`) and AssumeRole (`AirlockSTS.AssumeRole`), in IAM's
//! and STS's shapes.
//!
//! Every request type names its principal through [`On`]: `On<User, _>` reads `UserName` and
//! nothing else names a principal, `On<Role, _>` reads `RoleName`; the operation's other
//! members are a struct that refuses unknown members. So a role operation can never be pointed
//! at a user (or the reverse), and each handler authorizes its [`Op`] on the ARN of exactly the
//! principal it then acts on.

mod access_keys;
mod audit;
pub(crate) mod login;
pub(crate) mod mfa;
pub(crate) mod policies;
pub(crate) mod principals;
pub(crate) mod sts;
pub(crate) mod trust;

use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::{ApiError, Tag};
use crate::app::App;
use crate::store::{PrincipalKind, PrincipalRecord};

pub(super) use access_keys::{create_access_key, delete_access_key, list_access_keys, update_access_key};
pub(super) use audit::{list_audit_events, verify_audit_log};
pub(super) use login::{
    change_password, create_login_profile, delete_login_profile, get_login_profile, update_login_profile,
};
pub(super) use mfa::{
    create_virtual_mfa_device, deactivate_mfa_device, delete_virtual_mfa_device, enable_mfa_device,
    list_mfa_devices,
};
pub(super) use policies::{
    attach_policy, create_policy, delete_inline_policy, delete_policy, detach_policy, get_inline_policy,
    list_attached_policies, list_inline_policies, list_policies, put_inline_policy,
};
pub(super) use principals::{
    create_role, create_user, delete_principal, get_principal, list_principals, tag_principal,
    untag_principal, update_assume_role_policy,
};
pub(super) use sts::{assume_role, simulate};

/// The kind of principal a request is about, and the member that names it.
pub(super) trait Kind {
    /// `UserName` or `RoleName`.
    const MEMBER: &'static str;
    /// The kind of the named principal.
    const KIND: PrincipalKind;
}

/// Requests about a user (`UserName`).
pub(super) struct User;
/// Requests about a role (`RoleName`).
pub(super) struct Role;

impl Kind for User {
    const MEMBER: &'static str = "UserName";
    const KIND: PrincipalKind = PrincipalKind::User;
}

impl Kind for Role {
    const MEMBER: &'static str = "RoleName";
    const KIND: PrincipalKind = PrincipalKind::Role;
}

/// A request about one principal of kind `K`: its name, and the operation's other members.
pub(super) struct On<K, T> {
    /// The principal's name, from `K::MEMBER`.
    pub name: String,
    /// The operation's other members.
    pub rest: T,
    kind: PhantomData<K>,
}

impl<K: Kind, T> On<K, T> {
    /// The ARN of the named principal: the resource the operation is authorized on.
    pub(super) fn arn(&self, app: &App) -> String {
        principal_arn(app, K::KIND, &self.name)
    }

    /// The named principal, which must exist and be of kind `K`.
    async fn existing(&self, app: &App) -> Result<PrincipalRecord, ApiError> {
        app.store
            .principal(&self.name)
            .await?
            .filter(|p| p.kind == K::KIND)
            .ok_or_else(|| no_such(K::KIND.as_str(), &self.name))
    }
}

impl<'de, K: Kind, T: DeserializeOwned> Deserialize<'de> for On<K, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut members = serde_json::Map::<String, Value>::deserialize(d)?;
        let name = match members.remove(K::MEMBER) {
            Some(Value::String(name)) => name,
            Some(_) => return Err(D::Error::custom(format_args!("{} must be a string", K::MEMBER))),
            None => return Err(D::Error::missing_field(K::MEMBER)),
        };
        let rest = T::deserialize(Value::Object(members)).map_err(D::Error::custom)?;
        Ok(On { name, rest, kind: PhantomData })
    }
}

impl<K: Kind, T> fmt::Debug for On<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", K::MEMBER, self.name)
    }
}

/// No members besides the principal's name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Nothing {}

/// The page members of IAM's list operations (IAM's `MaxItems`/`Marker`; `MaxResults`/
/// `NextToken` are accepted for the airlock CLI).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", deny_unknown_fields, default)]
pub(super) struct Page {
    max_items: Option<usize>,
    marker: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

impl Page {
    /// One page of `items` in IAM's list shape (`IsTruncated`, `Marker`), under `key`.
    fn answer<T: serde::Serialize>(&self, key: &str, items: Vec<T>) -> Result<Value, ApiError> {
        let max = self.max_items.or(self.max_results).unwrap_or(100).clamp(1, 1000);
        let token = self.marker.as_deref().or(self.next_token.as_deref());
        let (page, next) = super::paginate(items, max, token)?;
        let mut out = json!({ key: page, "IsTruncated": next.is_some() });
        if let Some(n) = next {
            out["Marker"] = json!(n);
        }
        Ok(out)
    }
}

/// `arn:airlock:iam::<account>:<user|role>/<name>`.
pub(super) fn principal_arn(app: &App, kind: PrincipalKind, name: &str) -> String {
    format!("arn:airlock:iam::{}:{}/{name}", app.settings.account, kind.as_str())
}

/// `arn:airlock:iam::<account>:policy/<name>`.
fn policy_arn(app: &App, name: &str) -> String {
    format!("arn:airlock:iam::{}:policy/{name}", app.settings.account)
}

/// IAM's name rule for users, roles and policies.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

fn no_such(what: &str, name: &str) -> ApiError {
    ApiError::bad("NoSuchEntity", format!("The {what} with name {name} cannot be found."))
}

fn time(us: i64) -> i64 {
    us / 1_000_000
}

fn tags_of(tags: Option<Vec<Tag>>) -> Result<Vec<Tag>, ApiError> {
    let tags = tags.unwrap_or_default();
    super::check_tags(&tags)?;
    Ok(tags)
}

fn principal_json(p: &PrincipalRecord) -> Value {
    let (name_key, id_key) =
        if p.kind == PrincipalKind::User { ("UserName", "UserId") } else { ("RoleName", "RoleId") };
    let tags: Vec<Tag> = p.tags.iter().map(|(k, v)| Tag { key: k.clone(), value: v.clone() }).collect();
    json!({ name_key: p.name, id_key: p.principal_id, "Arn": p.arn, "CreateDate": time(p.created_us), "Tags": tags })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "PascalCase", deny_unknown_fields)]
    struct Doc {
        policy_name: String,
    }

    #[test]
    fn the_principal_member_is_the_kinds_own() {
        let ok: On<Role, Doc> = serde_json::from_str(r#"{"RoleName":"r","PolicyName":"p"}"#).unwrap();
        assert_eq!((ok.name.as_str(), ok.rest.policy_name.as_str()), ("r", "p"));
        // A role operation given a user: refused, never applied to the user.
        let e = serde_json::from_str::<On<Role, Doc>>(r#"{"UserName":"u","PolicyName":"p"}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `RoleName`"), "{e}");
        let e = serde_json::from_str::<On<Role, Doc>>(r#"{"RoleName":"r","UserName":"u","PolicyName":"p"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `UserName`"), "{e}");
        let e = serde_json::from_str::<On<User, Doc>>(r#"{"UserName":7,"PolicyName":"p"}"#).unwrap_err();
        assert!(e.to_string().contains("UserName must be a string"), "{e}");
    }
}
