//! Matrix: ForAllValues / ForAnyValue over multivalued keys.

use super::{cond_group, run, Group};

/// Every group of this file.
pub(super) fn groups() -> Vec<Group> {
    vec![
        cond_group(
            "ForAllValues:StringEquals",
            false,
            r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["Environment","Team"]}}"#,
            &[
                ("ForAllValues: subset of allowed values", &[("aws:TagKeys", &["Environment"])], true),
                (
                    "ForAllValues: exactly the allowed values",
                    &[("aws:TagKeys", &["Environment", "Team"])],
                    true,
                ),
                (
                    "ForAllValues: one value outside the set",
                    &[("aws:TagKeys", &["Environment", "Owner"])],
                    false,
                ),
                ("ForAllValues empty set true", &[("aws:TagKeys", &[])], true),
                ("ForAllValues missing key true", &[], true),
                (
                    "ForAllValues: single-valued key treated as a set of one",
                    &[("aws:TagKeys", &["Team"])],
                    true,
                ),
                ("ForAllValues: case-sensitive values", &[("aws:TagKeys", &["team"])], false),
            ],
        ),
        cond_group(
            "ForAnyValue:StringEquals",
            false,
            r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["Environment","Team"]}}"#,
            &[
                ("ForAnyValue: one value in the set", &[("aws:TagKeys", &["Owner", "Team"])], true),
                ("ForAnyValue: no value in the set", &[("aws:TagKeys", &["Owner"])], false),
                ("ForAnyValue: empty set false", &[("aws:TagKeys", &[])], false),
                ("ForAnyValue with a missing key evaluates to false", &[], false),
                ("ForAnyValue: all values in the set", &[("aws:TagKeys", &["Environment", "Team"])], true),
            ],
        ),
        cond_group(
            "ForAllValues:StringNotEquals",
            false,
            r#"{"ForAllValues:StringNotEquals":{"aws:TagKeys":["Secret","Owner"]}}"#,
            &[
                ("ForAllValues negated: no value forbidden", &[("aws:TagKeys", &["A", "B"])], true),
                ("ForAllValues negated: one value forbidden", &[("aws:TagKeys", &["A", "Secret"])], false),
                ("ForAllValues negated: second forbidden value (NOR)", &[("aws:TagKeys", &["Owner"])], false),
                ("ForAllValues negated: missing key true", &[], true),
            ],
        ),
        cond_group(
            "ForAnyValue:StringNotEquals",
            false,
            r#"{"ForAnyValue:StringNotEquals":{"aws:TagKeys":"Secret"}}"#,
            &[
                ("ForAnyValue negated: only forbidden value", &[("aws:TagKeys", &["Secret"])], false),
                ("ForAnyValue negated: one other value present", &[("aws:TagKeys", &["Secret", "A"])], true),
                ("ForAnyValue negated: missing key false", &[], false),
            ],
        ),
        cond_group(
            "ForAllValues:StringLike",
            false,
            r#"{"ForAllValues:StringLike":{"aws:TagKeys":["team-*","env"]}}"#,
            &[
                (
                    "ForAllValues:StringLike: all match some pattern",
                    &[("aws:TagKeys", &["team-a", "env", "team-b"])],
                    true,
                ),
                ("ForAllValues:StringLike: one matches none", &[("aws:TagKeys", &["team-a", "x"])], false),
            ],
        ),
        cond_group(
            "ForAnyValue:StringLike",
            false,
            r#"{"ForAnyValue:StringLike":{"aws:PrincipalOrgPaths":"o-1/r-1/ou-eng/*"}}"#,
            &[
                (
                    "ForAnyValue:StringLike: one path matches",
                    &[("aws:PrincipalOrgPaths", &["o-1/r-1/ou-ops/", "o-1/r-1/ou-eng/ou-web/"])],
                    true,
                ),
                (
                    "ForAnyValue:StringLike: none match",
                    &[("aws:PrincipalOrgPaths", &["o-1/r-1/ou-ops/"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "ForAnyValue:StringEqualsIgnoreCase",
            false,
            r#"{"ForAnyValue:StringEqualsIgnoreCase":{"airlock:Groups":"Admins"}}"#,
            &[
                (
                    "ForAnyValue:StringEqualsIgnoreCase: folded match",
                    &[("airlock:groups", &["users", "ADMINS"])],
                    true,
                ),
                ("ForAnyValue:StringEqualsIgnoreCase: none", &[("airlock:groups", &["users"])], false),
            ],
        ),
        cond_group(
            "ForAllValues:StringEqualsIfExists",
            false,
            r#"{"ForAllValues:StringEqualsIfExists":{"aws:TagKeys":"Team"}}"#,
            &[
                ("ForAllValues with IfExists: missing key", &[], true),
                ("ForAllValues with IfExists: present, outside", &[("aws:TagKeys", &["Team", "X"])], false),
            ],
        ),
        cond_group(
            "ForAnyValue:StringEqualsIfExists",
            false,
            r#"{"ForAnyValue:StringEqualsIfExists":{"aws:TagKeys":"Team"}}"#,
            &[
                ("ForAnyValue with IfExists: missing key matches", &[], true),
                ("ForAnyValue with IfExists: present, none match", &[("aws:TagKeys", &["X"])], false),
            ],
        ),
        cond_group(
            "ForAnyValue:NumericGreaterThan",
            false,
            r#"{"ForAnyValue:NumericGreaterThan":{"airlock:Ports":1023}}"#,
            &[
                ("ForAnyValue numeric: one high port", &[("airlock:ports", &["22", "8080"])], true),
                ("ForAnyValue numeric: all low", &[("airlock:ports", &["22", "80"])], false),
            ],
        ),
        cond_group(
            "ForAllValues:IpAddress",
            false,
            r#"{"ForAllValues:IpAddress":{"airlock:ForwardedFor":"10.0.0.0/8"}}"#,
            &[
                (
                    "ForAllValues IpAddress: every hop internal",
                    &[("airlock:forwardedfor", &["10.0.0.1", "10.9.9.9"])],
                    true,
                ),
                (
                    "ForAllValues IpAddress: one external hop",
                    &[("airlock:forwardedfor", &["10.0.0.1", "8.8.8.8"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "ForAnyValue:ArnLike",
            false,
            r#"{"ForAnyValue:ArnLike":{"airlock:RoleChain":"arn:airlock:iam::*:role/admin"}}"#,
            &[
                (
                    "ForAnyValue ArnLike: one ARN matches",
                    &[(
                        "airlock:rolechain",
                        &["arn:airlock:iam::1:role/dev", "arn:airlock:iam::2:role/admin"],
                    )],
                    true,
                ),
                (
                    "ForAnyValue ArnLike: none",
                    &[("airlock:rolechain", &["arn:airlock:iam::1:role/dev"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "deny-ForAnyValue-tag-keys",
            true,
            r#"{"ForAnyValue:StringEquals":{"aws:TagKeys":["Owner","CostCenter"]}}"#,
            &[
                ("deny if any protected tag key is touched", &[("aws:TagKeys", &["Name", "Owner"])], true),
                ("no deny for unprotected tag keys", &[("aws:TagKeys", &["Name"])], false),
                ("no deny when no tag keys sent", &[], false),
            ],
        ),
        cond_group(
            "deny-ForAllValues-trap",
            true,
            r#"{"ForAllValues:StringEquals":{"aws:TagKeys":["Name"]}}"#,
            &[
                ("ForAllValues deny applies on missing key (empty set true)", &[], true),
                ("ForAllValues deny applies when all keys listed", &[("aws:TagKeys", &["Name"])], true),
                (
                    "ForAllValues deny skipped when a key is unlisted",
                    &[("aws:TagKeys", &["Name", "Env"])],
                    false,
                ),
            ],
        ),
    ]
}

#[test]
fn set_operator_matrix() {
    run(&groups());
}
