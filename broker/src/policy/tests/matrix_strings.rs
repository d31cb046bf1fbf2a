//! Matrix: string, numeric and date condition operators.

use super::{cond_group, run, Group};

fn strings() -> Vec<Group> {
    vec![
        cond_group(
            "StringEquals",
            false,
            r#"{"StringEquals":{"aws:username":["alice","bob"]}}"#,
            &[
                ("StringEquals: exact value", &[("aws:username", &["alice"])], true),
                ("multiple values ORed", &[("aws:username", &["bob"])], true),
                ("StringEquals: other value", &[("aws:username", &["carol"])], false),
                ("StringEquals is case-sensitive on values", &[("aws:username", &["Alice"])], false),
                ("condition key absent: StringEquals false", &[], false),
                ("condition key names case-insensitive", &[("AWS:USERNAME", &["alice"])], true),
                (
                    "unqualified operator on multivalued key: any value matches",
                    &[("aws:username", &["carol", "alice"])],
                    true,
                ),
                ("empty value set counts as absent", &[("aws:username", &[])], false),
                ("no trimming of request values", &[("aws:username", &["alice "])], false),
                ("wildcard is literal in StringEquals", &[("aws:username", &["al*"])], false),
            ],
        ),
        cond_group(
            "StringEquals-literal-star",
            false,
            r#"{"StringEquals":{"airlock:Label":"a*"}}"#,
            &[
                ("StringEquals: * in policy value is literal", &[("airlock:label", &["a*"])], true),
                ("StringEquals: * in policy value is not a wildcard", &[("airlock:label", &["abc"])], false),
            ],
        ),
        cond_group(
            "StringNotEquals",
            false,
            r#"{"StringNotEquals":{"aws:username":["alice","bob"]}}"#,
            &[
                ("StringNotEquals: value neither a nor b", &[("aws:username", &["carol"])], true),
                ("negated values NORed: equals first", &[("aws:username", &["alice"])], false),
                ("negated values NORed: equals second", &[("aws:username", &["bob"])], false),
                ("absent key: StringNotEquals true", &[], true),
                ("StringNotEquals case-sensitive", &[("aws:username", &["ALICE"])], true),
                (
                    "negated unqualified on multivalued key: no value may match",
                    &[("aws:username", &["carol", "alice"])],
                    false,
                ),
                (
                    "negated unqualified on multivalued key: none match",
                    &[("aws:username", &["carol", "dave"])],
                    true,
                ),
            ],
        ),
        cond_group(
            "StringEqualsIgnoreCase",
            false,
            r#"{"StringEqualsIgnoreCase":{"ssm:resourceTag/Environment":["Dev","ÄRGER","kelvin"]}}"#,
            &[
                ("StringEqualsIgnoreCase: lower", &[("ssm:resourceTag/Environment", &["dev"])], true),
                ("StringEqualsIgnoreCase: upper", &[("ssm:resourceTag/Environment", &["DEV"])], true),
                (
                    "StringEqualsIgnoreCase: Unicode case folding",
                    &[("ssm:resourceTag/Environment", &["ärger"])],
                    true,
                ),
                (
                    "StringEqualsIgnoreCase: Unicode folding against an ASCII value (Kelvin sign)",
                    &[("ssm:resourceTag/Environment", &["\u{212A}elvin"])],
                    true,
                ),
                ("StringEqualsIgnoreCase: other value", &[("ssm:resourceTag/Environment", &["prod"])], false),
                ("StringEqualsIgnoreCase: absent key false", &[], false),
            ],
        ),
        cond_group(
            "StringNotEqualsIgnoreCase",
            false,
            r#"{"StringNotEqualsIgnoreCase":{"ssm:resourceTag/Environment":"prod"}}"#,
            &[
                (
                    "StringNotEqualsIgnoreCase: same value other case",
                    &[("ssm:resourceTag/Environment", &["PROD"])],
                    false,
                ),
                (
                    "StringNotEqualsIgnoreCase: other value",
                    &[("ssm:resourceTag/Environment", &["dev"])],
                    true,
                ),
                ("StringNotEqualsIgnoreCase: absent key true", &[], true),
            ],
        ),
        cond_group(
            "StringLike",
            false,
            r#"{"StringLike":{"ssm:resourceTag/Team":["web-*","db-??"]}}"#,
            &[
                ("StringLike: star", &[("ssm:resourceTag/Team", &["web-frontend"])], true),
                ("StringLike: star matches empty", &[("ssm:resourceTag/Team", &["web-"])], true),
                ("StringLike: ? per character", &[("ssm:resourceTag/Team", &["db-01"])], true),
                ("StringLike: ? count must match", &[("ssm:resourceTag/Team", &["db-001"])], false),
                ("StringLike is case-sensitive", &[("ssm:resourceTag/Team", &["Web-x"])], false),
                ("StringLike: anchored at start", &[("ssm:resourceTag/Team", &["xweb-a"])], false),
                ("StringLike: absent key false", &[], false),
            ],
        ),
        cond_group(
            "StringNotLike",
            false,
            r#"{"StringNotLike":{"aws:PrincipalTag/role":["admin*","root"]}}"#,
            &[
                (
                    "StringNotLike: matching pattern → false",
                    &[("aws:PrincipalTag/role", &["admin-x"])],
                    false,
                ),
                ("StringNotLike: second pattern → false", &[("aws:PrincipalTag/role", &["root"])], false),
                ("StringNotLike: no pattern matches → true", &[("aws:PrincipalTag/role", &["user"])], true),
                ("StringNotLike: absent key true", &[], true),
            ],
        ),
        cond_group(
            "StringEquals-number-and-bool-values",
            false,
            r#"{"StringEquals":{"airlock:Level":[5, true]}}"#,
            &[
                ("numeric policy value normalized to string", &[("airlock:level", &["5"])], true),
                ("boolean policy value normalized to string", &[("airlock:level", &["true"])], true),
                ("normalized string compared exactly", &[("airlock:level", &["5.0"])], false),
            ],
        ),
        cond_group(
            "multiple-keys",
            false,
            r#"{"StringEquals":{"aws:username":"alice","ssm:resourceTag/Owner":"alice"}}"#,
            &[
                (
                    "multiple keys ANDed: both hold",
                    &[("aws:username", &["alice"]), ("ssm:resourceTag/Owner", &["alice"])],
                    true,
                ),
                (
                    "multiple keys ANDed: one differs",
                    &[("aws:username", &["alice"]), ("ssm:resourceTag/Owner", &["bob"])],
                    false,
                ),
                ("multiple keys ANDed: one absent", &[("aws:username", &["alice"])], false),
            ],
        ),
        cond_group(
            "multiple-operators",
            false,
            r#"{"StringEquals":{"aws:username":"alice"},"Bool":{"aws:MultiFactorAuthPresent":"true"}}"#,
            &[
                (
                    "multiple operators ANDed: both hold",
                    &[("aws:username", &["alice"]), ("aws:MultiFactorAuthPresent", &["true"])],
                    true,
                ),
                (
                    "multiple operators ANDed: Bool fails",
                    &[("aws:username", &["alice"]), ("aws:MultiFactorAuthPresent", &["false"])],
                    false,
                ),
                ("multiple operators ANDed: Bool key absent", &[("aws:username", &["alice"])], false),
            ],
        ),
        cond_group(
            "IgnoreCase-with-variable",
            false,
            r#"{"StringEqualsIgnoreCase":{"ssm:resourceTag/Owner":"${aws:username}"}}"#,
            &[
                (
                    "variable in IgnoreCase value",
                    &[("aws:username", &["Alice"]), ("ssm:resourceTag/Owner", &["ALICE"])],
                    true,
                ),
                (
                    "variable in IgnoreCase value: missing variable",
                    &[("ssm:resourceTag/Owner", &["ALICE"])],
                    false,
                ),
            ],
        ),
    ]
}

fn numbers_dates() -> Vec<Group> {
    vec![
        cond_group(
            "NumericLessThan",
            false,
            r#"{"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}"#,
            &[
                ("Numeric: less", &[("aws:MultiFactorAuthAge", &["100"])], true),
                ("Numeric: equal is not less", &[("aws:MultiFactorAuthAge", &["3600"])], false),
                ("Numeric: greater", &[("aws:MultiFactorAuthAge", &["3601"])], false),
                (
                    "Numeric: decimal request value compared exactly",
                    &[("aws:MultiFactorAuthAge", &["3599.999"])],
                    true,
                ),
                ("Numeric: negative value", &[("aws:MultiFactorAuthAge", &["-5"])], true),
                (
                    "Numeric: unreadable request value matches nothing",
                    &[("aws:MultiFactorAuthAge", &["soon"])],
                    false,
                ),
                ("Numeric: absent key false", &[], false),
            ],
        ),
        cond_group(
            "NumericLessThanEquals",
            false,
            r#"{"NumericLessThanEquals":{"aws:MultiFactorAuthAge":3600}}"#,
            &[
                ("NumericLessThanEquals: boundary", &[("aws:MultiFactorAuthAge", &["3600"])], true),
                ("NumericLessThanEquals: above", &[("aws:MultiFactorAuthAge", &["3600.5"])], false),
            ],
        ),
        cond_group(
            "NumericGreaterThan",
            false,
            r#"{"NumericGreaterThan":{"airlock:Count":10}}"#,
            &[
                ("NumericGreaterThan: fraction above", &[("airlock:count", &["10.5"])], true),
                ("NumericGreaterThan: equal", &[("airlock:count", &["10"])], false),
                ("NumericGreaterThan: leading zeros", &[("airlock:count", &["0011"])], true),
            ],
        ),
        cond_group(
            "NumericGreaterThanEquals",
            false,
            r#"{"NumericGreaterThanEquals":{"airlock:Count":10.5}}"#,
            &[
                ("NumericGreaterThanEquals: equal", &[("airlock:count", &["10.5"])], true),
                ("NumericGreaterThanEquals: trailing zeros equal", &[("airlock:count", &["10.50"])], true),
                ("NumericGreaterThanEquals: below", &[("airlock:count", &["10.4"])], false),
            ],
        ),
        cond_group(
            "NumericEquals",
            false,
            r#"{"NumericEquals":{"airlock:Count":["1","2.5"]}}"#,
            &[
                ("NumericEquals: 1.0 equals 1", &[("airlock:count", &["1.0"])], true),
                ("NumericEquals: values ORed", &[("airlock:count", &["2.50"])], true),
                ("NumericEquals: other", &[("airlock:count", &["3"])], false),
                ("NumericEquals: exponent form", &[("airlock:count", &["25e-1"])], true),
            ],
        ),
        cond_group(
            "NumericNotEquals",
            false,
            r#"{"NumericNotEquals":{"airlock:Count":"5"}}"#,
            &[
                ("NumericNotEquals: equal → false", &[("airlock:count", &["5"])], false),
                ("NumericNotEquals: other → true", &[("airlock:count", &["6"])], true),
                ("NumericNotEquals: absent key true", &[], true),
                ("NumericNotEquals: unreadable value is not equal", &[("airlock:count", &["five"])], true),
            ],
        ),
        cond_group(
            "DateLessThan",
            false,
            r#"{"DateLessThan":{"aws:CurrentTime":"2026-12-31T23:59:59Z"}}"#,
            &[
                ("Date comparisons: before", &[("aws:CurrentTime", &["2026-11-05T10:00:00Z"])], true),
                ("Date comparisons: after", &[("aws:CurrentTime", &["2027-01-01T00:00:00Z"])], false),
                (
                    "Date comparisons: boundary is not less",
                    &[("aws:CurrentTime", &["2026-12-31T23:59:59Z"])],
                    false,
                ),
                (
                    "Date comparisons: epoch seconds request value",
                    &[("aws:CurrentTime", &["1793872800"])],
                    true,
                ),
                (
                    "Date comparisons: offset honoured",
                    &[("aws:CurrentTime", &["2027-01-01T00:30:00+01:00"])],
                    true,
                ),
                (
                    "Date comparisons: unreadable value matches nothing",
                    &[("aws:CurrentTime", &["tomorrow"])],
                    false,
                ),
                ("Date comparisons: absent key false", &[], false),
            ],
        ),
        cond_group(
            "DateGreaterThan-epoch-policy",
            false,
            r#"{"DateGreaterThan":{"aws:EpochTime":1793872800}}"#,
            &[
                (
                    "DateGreaterThan epoch policy value: later ISO",
                    &[("aws:EpochTime", &["2026-11-05T10:00:01Z"])],
                    true,
                ),
                (
                    "DateGreaterThan epoch policy value: equal",
                    &[("aws:EpochTime", &["2026-11-05T10:00:00Z"])],
                    false,
                ),
                (
                    "DateGreaterThan: same instant in other offset",
                    &[("aws:EpochTime", &["2026-11-05T11:00:00+01:00"])],
                    false,
                ),
                (
                    "DateGreaterThan: sub-second later",
                    &[("aws:EpochTime", &["2026-11-05T10:00:00.001Z"])],
                    true,
                ),
            ],
        ),
        cond_group(
            "DateEquals-date-only",
            false,
            r#"{"DateEquals":{"airlock:Day":"2026-11-05"}}"#,
            &[
                (
                    "DateEquals: date alone is midnight UTC",
                    &[("airlock:day", &["2026-11-05T00:00:00Z"])],
                    true,
                ),
                ("DateEquals: later that day differs", &[("airlock:day", &["2026-11-05T00:00:01Z"])], false),
            ],
        ),
        cond_group(
            "DateNotEquals",
            false,
            r#"{"DateNotEquals":{"airlock:Day":"2026-11-05T00:00:00Z"}}"#,
            &[
                ("DateNotEquals: same instant", &[("airlock:day", &["1793836800"])], false),
                ("DateNotEquals: other instant", &[("airlock:day", &["1793836801"])], true),
                ("DateNotEquals: absent key true", &[], true),
            ],
        ),
        cond_group(
            "DateLessThanEquals",
            false,
            r#"{"DateLessThanEquals":{"aws:CurrentTime":"2026-11-05T10:00Z"}}"#,
            &[
                ("DateLessThanEquals: boundary", &[("aws:CurrentTime", &["2026-11-05T10:00:00Z"])], true),
                ("DateLessThanEquals: after", &[("aws:CurrentTime", &["2026-11-05T10:00:01Z"])], false),
            ],
        ),
        cond_group(
            "DateGreaterThanEquals",
            false,
            r#"{"DateGreaterThanEquals":{"aws:TokenIssueTime":"2026-11-05T10:00:00+02:00"}}"#,
            &[
                (
                    "DateGreaterThanEquals: boundary in UTC",
                    &[("aws:TokenIssueTime", &["2026-11-05T08:00:00Z"])],
                    true,
                ),
                (
                    "DateGreaterThanEquals: before",
                    &[("aws:TokenIssueTime", &["2026-11-05T07:59:59Z"])],
                    false,
                ),
            ],
        ),
    ]
}

/// Every group of this file.
pub(super) fn groups() -> Vec<Group> {
    let mut all = strings();
    all.extend(numbers_dates());
    all
}

#[test]
fn string_number_date_matrix() {
    run(&groups());
}
