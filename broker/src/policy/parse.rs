//! IAM policy grammar: JSON document → [`CompiledPolicy`], rejecting anything IAM would not
//! accept (or that would silently mean something other than what its author wrote).

use std::collections::HashMap;
use std::sync::Arc;

use super::condition::{self, Condition};
use super::error::PolicyError;
use super::json::{self, Json};
use super::pattern::{ArnPattern, Pattern, Syntax};

/// Service prefixes an action may name; anything else is almost certainly a typo.
pub(crate) const KNOWN_SERVICES: &[&str] = &[
    "airlock",
    "cloudwatch",
    "ec2",
    "ec2messages",
    "iam",
    "kms",
    "logs",
    "s3",
    "ssm",
    "ssm-guiconnect",
    "ssmmessages",
    "sts",
];

/// A statement's `Effect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatementEffect {
    Allow,
    Deny,
}

/// One entry of `Action`/`NotAction`.
#[derive(Clone, Debug)]
pub(crate) enum ActionPattern {
    /// `*`: every action of every service.
    Any,
    /// `service:Name`, the service lowercased, the name matched ignoring ASCII case.
    Service { service: Box<str>, name: Pattern },
}

impl ActionPattern {
    /// Matches a request action already split at its first colon.
    fn matches(&self, service: &str, name: &str, ctx: &super::Context) -> bool {
        match self {
            ActionPattern::Any => true,
            ActionPattern::Service { service: s, name: n } => {
                s.eq_ignore_ascii_case(service) && n.matches(name, ctx, true)
            }
        }
    }
}

/// A compiled statement.
#[derive(Clone, Debug)]
pub(crate) struct Statement {
    pub(crate) sid: Option<Arc<str>>,
    pub(crate) effect: StatementEffect,
    /// `true` for NotAction: the statement covers every action except the listed ones.
    not_action: bool,
    actions: Box<[ActionPattern]>,
    /// `true` for NotResource.
    not_resource: bool,
    resources: Box<[ArnPattern]>,
    conditions: Box<[Condition]>,
}

/// A request with its action and resource split once, shared by every statement.
pub(crate) struct Prepared<'a> {
    pub(crate) service: &'a str,
    pub(crate) name: &'a str,
    pub(crate) arn: Option<[&'a str; 6]>,
    pub(crate) ctx: &'a super::Context,
}

impl Statement {
    /// Whether the statement covers the request: action, then resource, then conditions,
    /// cheapest first.
    pub(crate) fn applies(&self, req: &Prepared<'_>) -> bool {
        let action_listed = self.actions.iter().any(|a| a.matches(req.service, req.name, req.ctx));
        if action_listed == self.not_action {
            return false;
        }
        let resource_listed = self.resources.iter().any(|r| r.matches(req.arn.as_ref(), req.ctx));
        if resource_listed == self.not_resource {
            return false;
        }
        self.conditions.iter().all(|c| c.eval(req.ctx))
    }
}

/// A parsed and compiled policy document, ready for [`super::evaluate`].
#[derive(Clone, Debug)]
pub struct CompiledPolicy {
    pub(crate) name: Arc<str>,
    id: Option<String>,
    variables: bool,
    pub(crate) statements: Box<[Statement]>,
}

/// Entry point for parsing: `Policy::parse(name, json)`.
pub type Policy = CompiledPolicy;

impl CompiledPolicy {
    /// Parses and compiles an IAM JSON policy; `name` is reported in decisions.
    pub fn parse(name: &str, text: &str) -> Result<CompiledPolicy, PolicyError> {
        let doc = json::parse(text)?;
        compile(name, &doc)
    }

    /// The name given to [`CompiledPolicy::parse`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The document's `Id` member, if any.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Whether `${…}` policy variables are substituted (Version "2012-10-17").
    pub fn uses_variables(&self) -> bool {
        self.variables
    }

    /// How many statements the document holds.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }
}

fn wrong_type(path: &str, expected: &'static str, found: &Json) -> PolicyError {
    PolicyError::WrongType { path: path.into(), expected, found: found.kind() }
}

fn structure(path: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Structure { path: path.into(), message: message.into() }
}

fn compile(name: &str, doc: &Json) -> Result<CompiledPolicy, PolicyError> {
    let Json::Object(members) = doc else { return Err(wrong_type("policy", "an object", doc)) };
    let (mut version, mut id, mut statement) = (None, None, None);
    for (key, value) in members {
        match key.as_str() {
            "Version" => version = Some(value),
            "Id" => id = Some(value),
            "Statement" => statement = Some(value),
            _ => {
                return Err(PolicyError::UnknownMember {
                    path: "policy".into(),
                    member: key.clone(),
                    hint: " (expected Version, Id, Statement)".into(),
                })
            }
        }
    }
    let variables = match version {
        // Without a Version IAM applies the 2008 language, where `${…}` is literal text.
        None => false,
        Some(Json::String(v)) if v == "2012-10-17" => true,
        Some(Json::String(v)) if v == "2008-10-17" => false,
        Some(Json::String(v)) => return Err(PolicyError::Version(v.clone())),
        Some(other) => return Err(wrong_type("Version", "a string", other)),
    };
    let id = match id {
        None => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => return Err(wrong_type("Id", "a string", other)),
    };
    let statements: Vec<&Json> = match statement {
        None => return Err(structure("policy", "missing Statement")),
        Some(Json::Array(items)) => items.iter().collect(),
        Some(one @ Json::Object(_)) => vec![one],
        Some(other) => return Err(wrong_type("Statement", "an object or an array of objects", other)),
    };
    if statements.is_empty() {
        return Err(structure("Statement", "must hold at least one statement"));
    }
    let mut compiled = Vec::with_capacity(statements.len());
    // IAM requires Sids to be unique within a document; decisions name them, so must we.
    let mut sids: HashMap<Arc<str>, usize> = HashMap::new();
    for (i, st) in statements.into_iter().enumerate() {
        let path = format!("Statement[{i}]");
        let statement = compile_statement(st, &path, variables)?;
        if let Some(sid) = &statement.sid {
            if let Some(first) = sids.insert(sid.clone(), i) {
                return Err(structure(&path, format!("duplicate Sid `{sid}` (also Statement[{first}])")));
            }
        }
        compiled.push(statement);
    }
    Ok(CompiledPolicy { name: name.into(), id, variables, statements: compiled.into() })
}

fn compile_statement(st: &Json, path: &str, variables: bool) -> Result<Statement, PolicyError> {
    let Json::Object(members) = st else { return Err(wrong_type(path, "an object", st)) };
    let mut sid = None;
    let mut effect = None;
    let (mut action, mut not_action, mut resource, mut not_resource, mut condition) =
        (None, None, None, None, None);
    for (key, value) in members {
        match key.as_str() {
            "Sid" => sid = Some(value),
            "Effect" => effect = Some(value),
            "Action" => action = Some(value),
            "NotAction" => not_action = Some(value),
            "Resource" => resource = Some(value),
            "NotResource" => not_resource = Some(value),
            "Condition" => condition = Some(value),
            "Principal" | "NotPrincipal" => {
                return Err(PolicyError::UnknownMember {
                    path: path.into(),
                    member: key.clone(),
                    hint:
                        " (identity policies name no principal: they apply to whoever they are attached to)"
                            .into(),
                })
            }
            _ => {
                return Err(PolicyError::UnknownMember {
                    path: path.into(),
                    member: key.clone(),
                    hint: " (expected Sid, Effect, Action/NotAction, Resource/NotResource, Condition)".into(),
                })
            }
        }
    }
    let sid = match sid {
        None => None,
        Some(Json::String(s)) => Some(Arc::<str>::from(s.as_str())),
        Some(other) => return Err(wrong_type(&format!("{path}.Sid"), "a string", other)),
    };
    let effect = match effect {
        None => return Err(structure(path, "missing Effect")),
        Some(Json::String(e)) if e == "Allow" => StatementEffect::Allow,
        Some(Json::String(e)) if e == "Deny" => StatementEffect::Deny,
        Some(Json::String(e)) => {
            return Err(PolicyError::Effect { path: format!("{path}.Effect"), value: e.clone() })
        }
        Some(other) => return Err(wrong_type(&format!("{path}.Effect"), "a string", other)),
    };
    let (not_action, action_list, action_member) = match (action, not_action) {
        (Some(a), None) => (false, a, "Action"),
        (None, Some(a)) => (true, a, "NotAction"),
        (Some(_), Some(_)) => return Err(structure(path, "has both Action and NotAction; use exactly one")),
        (None, None) => return Err(structure(path, "needs Action or NotAction")),
    };
    let (not_resource, resource_list, resource_member) = match (resource, not_resource) {
        (Some(r), None) => (false, r, "Resource"),
        (None, Some(r)) => (true, r, "NotResource"),
        (Some(_), Some(_)) => {
            return Err(structure(path, "has both Resource and NotResource; use exactly one"))
        }
        (None, None) => return Err(structure(path, "needs Resource or NotResource")),
    };
    let action_path = format!("{path}.{action_member}");
    let actions = string_list(action_list, &action_path)?
        .into_iter()
        .map(|(p, a)| compile_action(a, &p))
        .collect::<Result<Box<[_]>, _>>()?;
    let resource_path = format!("{path}.{resource_member}");
    let resources = string_list(resource_list, &resource_path)?
        .into_iter()
        .map(|(p, r)| compile_resource(r, &p, variables))
        .collect::<Result<Box<[_]>, _>>()?;
    let conditions = match condition {
        None => Vec::new(),
        Some(block) => condition::compile(block, &format!("{path}.Condition"), variables)?,
    };
    Ok(Statement { sid, effect, not_action, actions, not_resource, resources, conditions: conditions.into() })
}

/// A string or non-empty list of strings, each with its own path for error messages.
fn string_list<'a>(value: &'a Json, path: &str) -> Result<Vec<(String, &'a str)>, PolicyError> {
    match value {
        Json::String(s) => Ok(vec![(path.to_string(), s.as_str())]),
        Json::Array(items) if items.is_empty() => Err(structure(path, "must not be an empty list")),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Json::String(s) => Ok((format!("{path}[{i}]"), s.as_str())),
                other => Err(wrong_type(&format!("{path}[{i}]"), "a string", other)),
            })
            .collect(),
        other => Err(wrong_type(path, "a string or a list of strings", other)),
    }
}

fn compile_action(action: &str, path: &str) -> Result<ActionPattern, PolicyError> {
    let fail = |reason: String| PolicyError::Action { path: path.into(), action: action.into(), reason };
    if action == "*" {
        return Ok(ActionPattern::Any);
    }
    let Some((service, name)) = action.split_once(':') else {
        return Err(fail("needs a `service:` prefix (only `*` may stand alone)".into()));
    };
    let service = service.to_ascii_lowercase();
    if !KNOWN_SERVICES.contains(&service.as_str()) {
        return Err(fail(format!(
            "unknown service prefix `{service}` (known: {})",
            KNOWN_SERVICES.join(", ")
        )));
    }
    if name.is_empty() {
        return Err(fail("empty action name after the service prefix".into()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | '-' | '_')))
    {
        return Err(fail(format!("character `{c}` is not allowed in an action name")));
    }
    let name = Pattern::parse(name, Syntax { wildcards: true, variables: false })
        .map_err(|e| fail(e.0.to_string()))?;
    Ok(ActionPattern::Service { service: service.into(), name })
}

fn compile_resource(resource: &str, path: &str, variables: bool) -> Result<ArnPattern, PolicyError> {
    let pattern = ArnPattern::parse(resource, Syntax { wildcards: true, variables }).map_err(|e| {
        PolicyError::Variable { path: path.into(), text: resource.into(), reason: e.0.into() }
    })?;
    pattern.ok_or_else(|| PolicyError::Resource {
        path: path.into(),
        resource: resource.into(),
        reason: concat!(
            "must be `*`, an ARN with six colon-separated parts ",
            "(arn:partition:service:region:account:resource), or fewer parts ending in `*`"
        )
        .into(),
    })
}
