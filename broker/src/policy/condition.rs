//! The Condition block: operators compiled to typed values, and their IAM evaluation rules.

use super::error::PolicyError;
use super::json::Json;
use super::pattern::{split_arn, ArnPattern, Pattern, Syntax};
use super::scalar::{parse_base64, parse_bool, parse_ip, Cidr, Decimal, Instant};
use super::Context;

/// How an operator treats a multivalued request key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetOp {
    /// No qualifier: a positive operator needs one request value to match, a negated one needs
    /// none to (it is exactly the negation of its positive form).
    Single,
    /// `ForAllValues:` every request value must satisfy the operator; true for an empty set.
    All,
    /// `ForAnyValue:` at least one request value must satisfy it; false for an empty set.
    Any,
}

/// Ordering comparisons shared by Numeric* and Date*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    /// `request <cmp> policy`.
    fn test<T: Ord>(self, request: &T, policy: &T) -> bool {
        match self {
            Cmp::Eq => request == policy,
            Cmp::Lt => request < policy,
            Cmp::Le => request <= policy,
            Cmp::Gt => request > policy,
            Cmp::Ge => request >= policy,
        }
    }
}

/// The policy's values for one key, already parsed for the operator's type.
#[derive(Clone, Debug)]
enum Values {
    /// StringEquals: no wildcards, so a match is string equality.
    Equals(Box<[Pattern]>),
    /// StringEqualsIgnoreCase: Unicode case folding on both sides.
    EqualsIgnoreCase(Box<[Pattern]>),
    /// StringLike: `*` and `?` wildcards.
    Like(Box<[Pattern]>),
    Numeric(Cmp, Box<[Decimal]>),
    Date(Cmp, Box<[Instant]>),
    Bool(Box<[bool]>),
    Ip(Box<[Cidr]>),
    /// ArnEquals and ArnLike behave identically in IAM: part-by-part wildcard matching.
    Arn(Box<[ArnPattern]>),
    Binary(Box<[Vec<u8>]>),
    /// `true` means "the key must be absent".
    Null(Box<[bool]>),
}

/// One operator applied to one key; a statement's conditions are all ANDed.
#[derive(Clone, Debug)]
pub(crate) struct Condition {
    /// Lowercased: context keys compare case-insensitively.
    key: Box<str>,
    negated: bool,
    if_exists: bool,
    set: SetOp,
    values: Values,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Equals,
    EqualsIgnoreCase,
    Like,
    Numeric(Cmp),
    Date(Cmp),
    Bool,
    Ip,
    Arn,
    Binary,
    Null,
}

/// Operator names without qualifier or `IfExists`: (name, family, negated).
const OPERATORS: &[(&str, Family, bool)] = &[
    ("StringEquals", Family::Equals, false),
    ("StringNotEquals", Family::Equals, true),
    ("StringEqualsIgnoreCase", Family::EqualsIgnoreCase, false),
    ("StringNotEqualsIgnoreCase", Family::EqualsIgnoreCase, true),
    ("StringLike", Family::Like, false),
    ("StringNotLike", Family::Like, true),
    ("NumericEquals", Family::Numeric(Cmp::Eq), false),
    ("NumericNotEquals", Family::Numeric(Cmp::Eq), true),
    ("NumericLessThan", Family::Numeric(Cmp::Lt), false),
    ("NumericLessThanEquals", Family::Numeric(Cmp::Le), false),
    ("NumericGreaterThan", Family::Numeric(Cmp::Gt), false),
    ("NumericGreaterThanEquals", Family::Numeric(Cmp::Ge), false),
    ("DateEquals", Family::Date(Cmp::Eq), false),
    ("DateNotEquals", Family::Date(Cmp::Eq), true),
    ("DateLessThan", Family::Date(Cmp::Lt), false),
    ("DateLessThanEquals", Family::Date(Cmp::Le), false),
    ("DateGreaterThan", Family::Date(Cmp::Gt), false),
    ("DateGreaterThanEquals", Family::Date(Cmp::Ge), false),
    ("Bool", Family::Bool, false),
    ("IpAddress", Family::Ip, false),
    ("NotIpAddress", Family::Ip, true),
    ("ArnEquals", Family::Arn, false),
    ("ArnLike", Family::Arn, false),
    ("ArnNotEquals", Family::Arn, true),
    ("ArnNotLike", Family::Arn, true),
    ("BinaryEquals", Family::Binary, false),
    ("Null", Family::Null, false),
];

/// Splits an operator name into qualifier, family, negation and `IfExists`.
fn parse_operator(name: &str, path: &str) -> Result<(SetOp, Family, bool, bool), PolicyError> {
    let err =
        |hint: String| PolicyError::Operator { path: path.to_string(), operator: name.to_string(), hint };
    let (set, rest) = if let Some(r) = name.strip_prefix("ForAllValues:") {
        (SetOp::All, r)
    } else if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (SetOp::Any, r)
    } else {
        (SetOp::Single, name)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    let Some(&(_, family, negated)) = OPERATORS.iter().find(|(n, _, _)| *n == base) else {
        // Operator names are case-sensitive; point at the spelling the author probably meant.
        let hint = OPERATORS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(base))
            .map(|(n, _, _)| format!(" (operator names are case-sensitive: did you mean `{n}`?)"))
            .unwrap_or_default();
        return Err(err(hint));
    };
    if family == Family::Null && if_exists {
        return Err(err(" (Null already tests for existence and takes no IfExists)".into()));
    }
    if family == Family::Null && set != SetOp::Single {
        return Err(err(" (Null takes no ForAllValues/ForAnyValue qualifier)".into()));
    }
    Ok((set, family, negated, if_exists))
}

/// Compiles a statement's `Condition` member.
pub(crate) fn compile(block: &Json, path: &str, variables: bool) -> Result<Vec<Condition>, PolicyError> {
    let Json::Object(operators) = block else {
        return Err(PolicyError::WrongType { path: path.into(), expected: "an object", found: block.kind() });
    };
    let mut out = Vec::new();
    for (op_name, keys) in operators {
        let op_path = format!("{path}.{op_name}");
        let (set, family, negated, if_exists) = parse_operator(op_name, &op_path)?;
        let Json::Object(keys) = keys else {
            return Err(PolicyError::WrongType { path: op_path, expected: "an object", found: keys.kind() });
        };
        if keys.is_empty() {
            return Err(PolicyError::Structure { path: op_path, message: "names no condition key".into() });
        }
        for (key, raw) in keys {
            let key_path = format!("{op_path}.{key}");
            if key.trim().is_empty() {
                return Err(PolicyError::Structure { path: key_path, message: "empty condition key".into() });
            }
            let texts = value_texts(raw, &key_path)?;
            let values = compile_values(family, &texts, op_name, &key_path, variables)?;
            out.push(Condition { key: key.to_lowercase().into(), negated, if_exists, set, values });
        }
    }
    Ok(out)
}

/// A condition value (or list of them) as text: IAM accepts strings, numbers and booleans.
fn value_texts(raw: &Json, path: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Json, path: String| match v {
        Json::String(s) | Json::Number(s) => Ok(s.clone()),
        Json::Bool(b) => Ok(b.to_string()),
        other => {
            Err(PolicyError::WrongType { path, expected: "a string, number or boolean", found: other.kind() })
        }
    };
    match raw {
        Json::Array(items) if items.is_empty() => {
            Err(PolicyError::Structure { path: path.into(), message: "empty list of values".into() })
        }
        Json::Array(items) => items.iter().enumerate().map(|(i, v)| one(v, format!("{path}[{i}]"))).collect(),
        single => Ok(vec![one(single, path.to_string())?]),
    }
}

fn compile_values(
    family: Family,
    texts: &[String],
    operator: &str,
    path: &str,
    variables: bool,
) -> Result<Values, PolicyError> {
    let bad = |value: &str, reason: &str| PolicyError::Value {
        path: path.into(),
        operator: operator.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let patterns = |wildcards: bool| -> Result<Box<[Pattern]>, PolicyError> {
        texts
            .iter()
            .map(|t| {
                Pattern::parse(t, Syntax { wildcards, variables }).map_err(|e| PolicyError::Variable {
                    path: path.into(),
                    text: t.clone(),
                    reason: e.0.into(),
                })
            })
            .collect()
    };
    fn typed<T>(
        texts: &[String],
        parse: impl Fn(&str) -> Option<T>,
        fail: impl Fn(&str) -> PolicyError,
    ) -> Result<Box<[T]>, PolicyError> {
        texts.iter().map(|t| parse(t).ok_or_else(|| fail(t))).collect()
    }
    Ok(match family {
        Family::Equals => Values::Equals(patterns(false)?),
        Family::EqualsIgnoreCase => Values::EqualsIgnoreCase(patterns(false)?),
        Family::Like => Values::Like(patterns(true)?),
        Family::Numeric(cmp) => {
            Values::Numeric(cmp, typed(texts, Decimal::parse, |t| bad(t, "not a decimal number"))?)
        }
        Family::Date(cmp) => Values::Date(
            cmp,
            typed(texts, Instant::parse, |t| bad(t, "not an ISO 8601 date/time or epoch seconds"))?,
        ),
        Family::Bool => Values::Bool(typed(texts, parse_bool, |t| bad(t, "must be true or false"))?),
        Family::Null => Values::Null(typed(texts, parse_bool, |t| bad(t, "must be true or false"))?),
        Family::Ip => {
            Values::Ip(typed(texts, Cidr::parse, |t| bad(t, "not an IPv4/IPv6 address or CIDR block"))?)
        }
        Family::Binary => Values::Binary(typed(texts, parse_base64, |t| bad(t, "not base64"))?),
        Family::Arn => {
            let mut out = Vec::with_capacity(texts.len());
            for t in texts {
                let parsed = ArnPattern::parse(t, Syntax { wildcards: true, variables }).map_err(|e| {
                    PolicyError::Variable { path: path.into(), text: t.clone(), reason: e.0.into() }
                })?;
                out.push(parsed.ok_or_else(|| {
                    bad(t, "not `*`, an ARN of six colon-separated parts, or fewer parts ending in `*`")
                })?);
            }
            Values::Arn(out.into())
        }
    })
}

impl Condition {
    /// Evaluates the condition against the request context.
    pub(crate) fn eval(&self, ctx: &Context) -> bool {
        // An empty set of values counts as absent: IAM treats a key that resolves to an empty
        // data set like a missing one (ForAllValues true, Null true).
        let present = ctx.get_lower(&self.key).filter(|v| !v.is_empty());
        if let Values::Null(expect_absent) = &self.values {
            return expect_absent.iter().any(|&absent| absent == present.is_none());
        }
        let Some(request) = present else {
            return self.if_exists
                || match self.set {
                    SetOp::All => true,
                    SetOp::Any => false,
                    // IAM: positive operators are false on a missing key, negated ones true.
                    SetOp::Single => self.negated,
                };
        };
        // `satisfies` is the operator's verdict on one request value; for a negated operator the
        // policy values are ORed inside the negation (the value matches none of them).
        let satisfies = |r: &String| self.any_value_matches(r, ctx) != self.negated;
        match (self.set, self.negated) {
            (SetOp::Single, false) | (SetOp::Any, _) => request.iter().any(satisfies),
            (SetOp::Single, true) | (SetOp::All, _) => request.iter().all(satisfies),
        }
    }

    /// Whether one request value matches at least one policy value under the positive operator.
    /// A request value the operator cannot read (a non-number for Numeric*, …) matches nothing.
    fn any_value_matches(&self, request: &str, ctx: &Context) -> bool {
        match &self.values {
            Values::Equals(pats) => pats.iter().any(|p| p.matches(request, ctx, false)),
            Values::Like(pats) => pats.iter().any(|p| p.matches(request, ctx, false)),
            Values::EqualsIgnoreCase(pats) => pats.iter().any(|p| match p.resolve(ctx) {
                Some(v) => eq_ignore_case(&v, request),
                None => false,
            }),
            Values::Numeric(cmp, vals) => {
                Decimal::parse(request).is_some_and(|r| vals.iter().any(|v| cmp.test(&r, v)))
            }
            Values::Date(cmp, vals) => {
                Instant::parse(request).is_some_and(|r| vals.iter().any(|v| cmp.test(&r, v)))
            }
            Values::Bool(vals) => parse_bool(request).is_some_and(|r| vals.contains(&r)),
            Values::Ip(cidrs) => parse_ip(request).is_some_and(|a| cidrs.iter().any(|c| c.contains(a))),
            Values::Arn(pats) => {
                let parts = split_arn(request);
                pats.iter().any(|p| p.matches(parts.as_ref(), ctx))
            }
            Values::Binary(vals) => parse_base64(request).is_some_and(|r| vals.contains(&r)),
            // Handled before any request value is looked at.
            Values::Null(_) => false,
        }
    }
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
}
