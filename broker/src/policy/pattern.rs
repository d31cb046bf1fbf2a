//! Wildcard patterns, policy-variable templates and ARN patterns, compiled once at parse time.

use std::borrow::Cow;

use super::Context;

/// How a string from a policy is read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Syntax {
    /// `*` and `?` are wildcards (StringLike, Arn*, Action, Resource) rather than literal text.
    pub wildcards: bool,
    /// `${…}` is a policy variable (Version 2012-10-17 only; 2008 reads it literally).
    pub variables: bool,
}

/// A `${key}` or `${key, 'default'}` reference to a request-context key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Var {
    /// The context key, lowercased because keys compare case-insensitively.
    key: Box<str>,
    default: Option<Box<str>>,
}

impl Var {
    /// The value substituted for the variable, or `None` when it cannot be resolved.
    ///
    /// IAM refuses to substitute multivalued keys; an absent or multivalued key falls back to
    /// the default when there is one.
    fn resolve<'a>(&'a self, ctx: &'a Context) -> Option<&'a str> {
        match ctx.get_lower(&self.key) {
            Some([one]) => Some(one.as_str()),
            _ => self.default.as_deref(),
        }
    }
}

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(Box<str>),
    Star,
    One,
    Var(Var),
}

/// A token of a pattern without variables.
#[derive(Clone, Debug)]
pub(crate) enum GTok {
    Lit(Box<str>),
    Star,
    One,
}

/// A token with variables already substituted; substituted text is always literal, so a user
/// name or tag value holding `*` cannot widen a pattern.
#[derive(Clone, Copy, Debug)]
enum Piece<'a> {
    Lit(&'a str),
    Star,
    One,
}

/// A parse failure inside `${…}`; the caller adds the location.
#[derive(Debug)]
pub(crate) struct VarError(pub &'static str);

/// A compiled string pattern: literal text, wildcards and policy variables.
#[derive(Clone, Debug)]
pub(crate) enum Pattern {
    /// `*` alone.
    Any,
    /// Literal text only.
    Exact(Box<str>),
    /// Literal text followed by a single trailing `*`.
    Prefix(Box<str>),
    /// Wildcards but no variables.
    Glob(Box<[GTok]>),
    /// At least one variable; resolved per request.
    Template(Box<[Tok]>),
}

impl Pattern {
    /// Compiles `text` under `syntax`.
    pub(crate) fn parse(text: &str, syntax: Syntax) -> Result<Self, VarError> {
        Ok(Self::from_toks(tokenize(text, syntax)?))
    }

    /// Picks the cheapest matcher for a token list.
    pub(crate) fn from_toks(toks: Vec<Tok>) -> Self {
        if toks.iter().any(|t| matches!(t, Tok::Var(_))) {
            return Pattern::Template(toks.into());
        }
        match toks.as_slice() {
            [] => Pattern::Exact("".into()),
            [Tok::Star] => Pattern::Any,
            [Tok::Lit(s)] => Pattern::Exact(s.clone()),
            [Tok::Lit(s), Tok::Star] => Pattern::Prefix(s.clone()),
            _ => Pattern::Glob(
                toks.into_iter()
                    .filter_map(|t| match t {
                        Tok::Lit(s) => Some(GTok::Lit(s)),
                        Tok::Star => Some(GTok::Star),
                        Tok::One => Some(GTok::One),
                        Tok::Var(_) => None,
                    })
                    .collect(),
            ),
        }
    }

    /// Matches `text` as a whole; `ascii_ci` folds ASCII case (for action names).
    pub(crate) fn matches(&self, text: &str, ctx: &Context, ascii_ci: bool) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => eq_bytes(s.as_bytes(), text.as_bytes(), ascii_ci),
            Pattern::Prefix(s) => {
                text.len() >= s.len() && eq_bytes(s.as_bytes(), &text.as_bytes()[..s.len()], ascii_ci)
            }
            Pattern::Glob(toks) => glob(toks, text, ascii_ci, |t| match t {
                GTok::Lit(s) => Piece::Lit(s),
                GTok::Star => Piece::Star,
                GTok::One => Piece::One,
            }),
            Pattern::Template(toks) => match resolve_pieces(toks, ctx) {
                Some(pieces) => glob(&pieces, text, ascii_ci, |p| *p),
                None => false,
            },
        }
    }

    /// The text with variables substituted, for operators without wildcards; `None` when a
    /// variable cannot be resolved.
    pub(crate) fn resolve<'a>(&'a self, ctx: &'a Context) -> Option<Cow<'a, str>> {
        match self {
            Pattern::Exact(s) => Some(Cow::Borrowed(s)),
            Pattern::Any => Some(Cow::Borrowed("*")),
            Pattern::Prefix(s) => Some(Cow::Owned(format!("{s}*"))),
            Pattern::Glob(toks) => {
                let mut out = String::new();
                for t in toks.iter() {
                    match t {
                        GTok::Lit(s) => out.push_str(s),
                        GTok::Star => out.push('*'),
                        GTok::One => out.push('?'),
                    }
                }
                Some(Cow::Owned(out))
            }
            Pattern::Template(toks) => {
                let mut out = String::new();
                for t in toks.iter() {
                    match t {
                        Tok::Lit(s) => out.push_str(s),
                        Tok::Star => out.push('*'),
                        Tok::One => out.push('?'),
                        Tok::Var(v) => out.push_str(v.resolve(ctx)?),
                    }
                }
                Some(Cow::Owned(out))
            }
        }
    }
}

fn eq_bytes(a: &[u8], b: &[u8], ascii_ci: bool) -> bool {
    if ascii_ci {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn resolve_pieces<'a>(toks: &'a [Tok], ctx: &'a Context) -> Option<Vec<Piece<'a>>> {
    toks.iter()
        .map(|t| match t {
            Tok::Lit(s) => Some(Piece::Lit(s)),
            Tok::Star => Some(Piece::Star),
            Tok::One => Some(Piece::One),
            Tok::Var(v) => v.resolve(ctx).map(Piece::Lit),
        })
        .collect()
}

/// Length in bytes of the UTF-8 character starting at `text[i]`.
fn char_len(text: &str, i: usize) -> usize {
    text.get(i..).and_then(|s| s.chars().next()).map_or(1, char::len_utf8)
}

/// Whole-string wildcard match with single-star backtracking: linear for patterns with one
/// `*`, and never worse than O(pattern × text), so hostile patterns cannot blow up.
fn glob<T>(pat: &[T], text: &str, ascii_ci: bool, piece: impl Fn(&T) -> Piece<'_>) -> bool {
    let bytes = text.as_bytes();
    let (mut p, mut t) = (0usize, 0usize);
    // After a `*`: the piece to resume from and where in the text the star's match ends.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        if p < pat.len() {
            match piece(&pat[p]) {
                Piece::Star => {
                    resume = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Piece::One if t < bytes.len() => {
                    t += char_len(text, t);
                    p += 1;
                    continue;
                }
                Piece::Lit(s)
                    if bytes.len() - t >= s.len()
                        && eq_bytes(s.as_bytes(), &bytes[t..t + s.len()], ascii_ci) =>
                {
                    t += s.len();
                    p += 1;
                    continue;
                }
                _ => {}
            }
        } else if t == bytes.len() {
            return true;
        }
        match resume {
            Some((rp, rt)) if rt < bytes.len() => {
                let next = rt + char_len(text, rt);
                resume = Some((rp, next));
                p = rp;
                t = next;
            }
            _ => return false,
        }
    }
}

/// Splits `text` into tokens; adjacent literal text is merged.
pub(crate) fn tokenize(text: &str, syntax: Syntax) -> Result<Vec<Tok>, VarError> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let flush = |lit: &mut String, toks: &mut Vec<Tok>| {
        if !lit.is_empty() {
            toks.push(Tok::Lit(std::mem::take(lit).into()));
        }
    };
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if syntax.variables && rest.starts_with("${") {
            let (var, after) = parse_var(&rest[2..])?;
            rest = after;
            match var {
                VarTok::Literal(ch) => lit.push(ch),
                VarTok::Var(v) => {
                    flush(&mut lit, &mut toks);
                    toks.push(Tok::Var(v));
                }
            }
            continue;
        }
        rest = &rest[c.len_utf8()..];
        match c {
            '*' if syntax.wildcards => {
                flush(&mut lit, &mut toks);
                // `**` means the same as `*` and would only slow the matcher down.
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
            }
            '?' if syntax.wildcards => {
                flush(&mut lit, &mut toks);
                toks.push(Tok::One);
            }
            _ => lit.push(c),
        }
    }
    flush(&mut lit, &mut toks);
    Ok(toks)
}

enum VarTok {
    /// `${*}`, `${?}`, `${$}`: the character itself, never a wildcard.
    Literal(char),
    Var(Var),
}

/// Parses the inside of `${…}` (after the `${`); returns the variable and the text after `}`.
fn parse_var(s: &str) -> Result<(VarTok, &str), VarError> {
    let s = s.trim_start();
    let end = s.find([',', '}']).ok_or(VarError("missing closing `}`"))?;
    let key = s[..end].trim();
    if key.is_empty() {
        return Err(VarError("empty variable name"));
    }
    if key.contains(char::is_whitespace) || key.contains('{') || key.contains('$') && key != "$" {
        return Err(VarError("variable name contains a space, `{` or `$`"));
    }
    let mut rest = &s[end..];
    let mut default = None;
    if let Some(after_comma) = rest.strip_prefix(',') {
        let body = after_comma
            .trim_start()
            .strip_prefix('\'')
            .ok_or(VarError("default value must be quoted with '"))?;
        // A doubled quote stands for one quote character.
        let mut value = String::new();
        let mut chars = body.char_indices();
        let tail = loop {
            match chars.next() {
                None => return Err(VarError("unterminated default value")),
                Some((i, '\'')) => {
                    if body[i + 1..].starts_with('\'') {
                        value.push('\'');
                        chars.next();
                    } else {
                        break &body[i + 1..];
                    }
                }
                Some((_, c)) => value.push(c),
            }
        };
        default = Some(value.into_boxed_str());
        rest = tail.trim_start();
    }
    let rest = rest.strip_prefix('}').ok_or(VarError("missing closing `}`"))?;
    let tok = match key {
        "*" => VarTok::Literal('*'),
        "?" => VarTok::Literal('?'),
        "$" => VarTok::Literal('$'),
        _ => VarTok::Var(Var { key: key.to_lowercase().into(), default }),
    };
    Ok((tok, rest))
}

/// An ARN pattern compared part by part, as IAM's Resource element and Arn* operators do.
#[derive(Clone, Debug)]
pub(crate) enum ArnPattern {
    /// `*`: every resource.
    Any,
    /// `arn`, partition, service, region, account, and the resource part (which may hold colons).
    Parts(Box<[Pattern; 6]>),
    /// Two to five parts, the last ending in `*` (`arn:aws:ssm:*`): the leading parts are
    /// compared part by part and the last one spans the rest of the ARN, colons included.
    Short(Box<[Pattern]>),
}

impl ArnPattern {
    /// Compiles `text`; `Ok(None)` when it is neither `*`, nor six colon-separated parts, nor
    /// two to five parts whose last ends in `*`.
    pub(crate) fn parse(text: &str, syntax: Syntax) -> Result<Option<Self>, VarError> {
        let toks = tokenize(text, syntax)?;
        if toks == [Tok::Star] {
            return Ok(Some(ArnPattern::Any));
        }
        // Split on colons in literal text only, so `${aws:username}` stays whole; after the
        // fifth colon everything belongs to the resource part.
        let mut parts: Vec<Vec<Tok>> = vec![Vec::new()];
        for tok in toks {
            match tok {
                Tok::Lit(s) => {
                    let mut rest: &str = &s;
                    while parts.len() < 6 {
                        let Some(i) = rest.find(':') else { break };
                        if let (true, Some(p)) = (i > 0, parts.last_mut()) {
                            p.push(Tok::Lit(rest[..i].into()));
                        }
                        parts.push(Vec::new());
                        rest = &rest[i + 1..];
                    }
                    if let (false, Some(p)) = (rest.is_empty(), parts.last_mut()) {
                        p.push(Tok::Lit(rest.into()));
                    }
                }
                other => {
                    if let Some(p) = parts.last_mut() {
                        p.push(other)
                    }
                }
            }
        }
        if parts.len() < 6 {
            let spans_the_rest = parts.last().and_then(|p| p.last()) == Some(&Tok::Star);
            if parts.len() < 2 || !spans_the_rest {
                return Ok(None);
            }
            return Ok(Some(ArnPattern::Short(parts.into_iter().map(Pattern::from_toks).collect())));
        }
        let Ok(parts) = <[Vec<Tok>; 6]>::try_from(parts) else { return Ok(None) };
        Ok(Some(ArnPattern::Parts(Box::new(parts.map(Pattern::from_toks)))))
    }

    /// Matches an already split request ARN (`None` when the request value is not an ARN).
    pub(crate) fn matches(&self, arn: Option<&[&str; 6]>, ctx: &Context) -> bool {
        match (self, arn) {
            (ArnPattern::Any, _) => true,
            (ArnPattern::Parts(pats), Some(parts)) => {
                pats.iter().zip(parts.iter()).all(|(pat, part)| pat.matches(part, ctx, false))
            }
            (ArnPattern::Short(pats), Some(parts)) => {
                let Some((last, leading)) = pats.split_last() else { return false };
                let n = leading.len();
                if !leading.iter().zip(parts.iter()).all(|(pat, part)| pat.matches(part, ctx, false)) {
                    return false;
                }
                match last {
                    Pattern::Any => true,
                    // The parts came from one string split on its first five colons.
                    _ => last.matches(&parts[n..].join(":"), ctx, false),
                }
            }
            (ArnPattern::Parts(_) | ArnPattern::Short(_), None) => false,
        }
    }
}

/// Splits an ARN into its six parts; `None` when it has fewer than five colons.
pub(crate) fn split_arn(text: &str) -> Option<[&str; 6]> {
    let mut it = text.splitn(6, ':');
    let parts = [it.next()?, it.next()?, it.next()?, it.next()?, it.next()?, it.next()?];
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(pattern: &str, text: &str) -> bool {
        Pattern::parse(pattern, Syntax { wildcards: true, variables: true }).unwrap().matches(
            text,
            &Context::new(),
            false,
        )
    }

    #[test]
    fn glob_basics() {
        assert!(like("", ""));
        assert!(!like("", "a"));
        assert!(like("*", ""));
        assert!(like("a*b*c", "abc"));
        assert!(like("a*b*c", "axxbyyc"));
        assert!(!like("a*b*c", "axxbyycd"));
        assert!(like("*.log", "x.log.log"));
        assert!(like("??", "éü"));
        assert!(!like("?", "éü"));
        assert!(like("a**b", "ab"));
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let text = "a".repeat(20_000);
        let start = std::time::Instant::now();
        assert!(!like("*a*a*a*a*a*a*a*a*b", &text));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn arn_split_keeps_variables_whole() {
        let p = ArnPattern::parse(
            "arn:aws:s3:::b/${aws:username, 'a:b'}/*",
            Syntax { wildcards: true, variables: true },
        )
        .unwrap()
        .unwrap();
        let ctx = Context::new();
        assert!(p.matches(split_arn("arn:aws:s3:::b/a:b/x").as_ref(), &ctx));
        assert!(!p.matches(split_arn("arn:aws:s3:::b/c/x").as_ref(), &ctx));
        assert!(ArnPattern::parse("arn:aws:s3", Syntax { wildcards: true, variables: true })
            .unwrap()
            .is_none());
        assert_eq!(split_arn("a:b:c:d:e"), None);
        assert_eq!(split_arn("a:b:c:d:e:f:g"), Some(["a", "b", "c", "d", "e", "f:g"]));
    }
}
