//! Errors reported while parsing and compiling a policy document.

/// Why a policy document was rejected; `path` names the element, e.g. `Statement[2].Effect`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not well-formed JSON (or repeats a member name); line and column are 1-based.
    #[error("malformed policy JSON at line {line}, column {column}: {message}")]
    Json {
        /// Line of the fault, starting at 1.
        line: usize,
        /// Column of the fault, starting at 1 (0 when the input ended early on an empty line).
        column: usize,
        /// serde_json's description of the fault, without the position.
        message: String,
    },
    /// A member that the IAM grammar does not define, or that identity policies may not use.
    #[error("{path}: unknown member `{member}`{hint}")]
    UnknownMember {
        /// Where the member was found.
        path: String,
        /// The member's name as written.
        member: String,
        /// Extra explanation, empty or starting with a separator.
        hint: String,
    },
    /// A required member is absent, or two mutually exclusive members are both present.
    #[error("{path}: {message}")]
    Structure {
        /// Where the problem is.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A member holds a JSON type the grammar does not allow there.
    #[error("{path}: expected {expected}, found {found}")]
    WrongType {
        /// Where the value is.
        path: String,
        /// What the grammar wants.
        expected: &'static str,
        /// What the document has.
        found: &'static str,
    },
    /// `Version` is neither "2012-10-17" nor "2008-10-17".
    #[error("Version: unsupported policy language version `{0}` (use \"2012-10-17\")")]
    Version(String),
    /// `Effect` is not exactly "Allow" or "Deny".
    #[error("{path}: invalid Effect `{value}` (must be exactly \"Allow\" or \"Deny\")")]
    Effect {
        /// Where the Effect is.
        path: String,
        /// The value as written.
        value: String,
    },
    /// An action that is not `*` or `service:Name`, or whose service prefix is unknown.
    #[error("{path}: invalid action `{action}`: {reason}")]
    Action {
        /// Where the action is.
        path: String,
        /// The action as written.
        action: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A resource that is neither `*`, nor an ARN of six colon-separated parts, nor fewer parts
    /// ending in `*`.
    #[error("{path}: invalid resource `{resource}`: {reason}")]
    Resource {
        /// Where the resource is.
        path: String,
        /// The resource as written.
        resource: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A condition operator that IAM does not define (or a qualifier it cannot take).
    #[error("{path}: unknown condition operator `{operator}`{hint}")]
    Operator {
        /// Where the operator is.
        path: String,
        /// The operator as written.
        operator: String,
        /// Extra explanation, empty or starting with a separator.
        hint: String,
    },
    /// A condition value the operator cannot use (bad number, date, CIDR, base64, boolean, …).
    #[error("{path}: invalid value `{value}` for {operator}: {reason}")]
    Value {
        /// Where the value is.
        path: String,
        /// The operator it belongs to.
        operator: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A malformed policy variable such as `${aws:username` or `${}`.
    #[error("{path}: invalid policy variable in `{text}`: {reason}")]
    Variable {
        /// Where the text is.
        path: String,
        /// The whole string holding the variable.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}
