//! Matrix: Bool, IP, ARN and Binary operators, absent keys, IfExists, Null, negated denies.

use super::{cond_group, run, Group};

fn typed() -> Vec<Group> {
    vec![
        cond_group(
            "Bool",
            false,
            r#"{"Bool":{"aws:SecureTransport":"true"}}"#,
            &[
                ("Bool: true", &[("aws:SecureTransport", &["true"])], true),
                ("Bool: case-insensitive", &[("aws:SecureTransport", &["TRUE"])], true),
                ("Bool: false", &[("aws:SecureTransport", &["false"])], false),
                ("Bool: unreadable value", &[("aws:SecureTransport", &["yes"])], false),
                ("Bool: absent key false", &[], false),
            ],
        ),
        cond_group(
            "Bool-json-literal",
            false,
            r#"{"Bool":{"aws:MultiFactorAuthPresent":false}}"#,
            &[
                ("Bool: JSON boolean policy value", &[("aws:MultiFactorAuthPresent", &["false"])], true),
                (
                    "Bool: JSON boolean policy value mismatch",
                    &[("aws:MultiFactorAuthPresent", &["true"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "BoolIfExists",
            false,
            r#"{"BoolIfExists":{"ssm:SessionDocumentAccessCheck":"true"}}"#,
            &[
                ("IfExists on absent key", &[], true),
                ("IfExists with present key: match", &[("ssm:SessionDocumentAccessCheck", &["true"])], true),
                (
                    "IfExists with present key: mismatch",
                    &[("ssm:SessionDocumentAccessCheck", &["false"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "IpAddress",
            false,
            r#"{"IpAddress":{"aws:SourceIp":["10.0.0.0/8","192.168.1.10","2001:db8::/32"]}}"#,
            &[
                ("IpAddress CIDR v4", &[("aws:SourceIp", &["10.1.2.3"])], true),
                ("IpAddress CIDR v4 outside", &[("aws:SourceIp", &["11.0.0.1"])], false),
                ("IpAddress plain v4 address", &[("aws:SourceIp", &["192.168.1.10"])], true),
                ("IpAddress plain v4 address is /32", &[("aws:SourceIp", &["192.168.1.11"])], false),
                ("IpAddress CIDR v6", &[("aws:SourceIp", &["2001:db8::5"])], true),
                ("IpAddress CIDR v6 outside", &[("aws:SourceIp", &["2001:db9::5"])], false),
                ("IpAddress IPv4-mapped IPv6 request", &[("aws:SourceIp", &["::ffff:10.0.0.1"])], true),
                ("IpAddress unreadable address", &[("aws:SourceIp", &["bogus"])], false),
                ("IpAddress absent key false", &[], false),
            ],
        ),
        cond_group(
            "NotIpAddress",
            false,
            r#"{"NotIpAddress":{"aws:SourceIp":"203.0.113.0/24"}}"#,
            &[
                ("NotIpAddress: inside → false", &[("aws:SourceIp", &["203.0.113.9"])], false),
                ("NotIpAddress: outside → true", &[("aws:SourceIp", &["198.51.100.1"])], true),
                ("NotIpAddress: absent key true", &[], true),
                ("NotIpAddress: v6 never inside v4 block", &[("aws:SourceIp", &["2001:db8::1"])], true),
            ],
        ),
        cond_group(
            "ArnLike",
            false,
            r#"{"ArnLike":{"aws:SourceArn":"arn:airlock:iam::*:role/admin-*"}}"#,
            &[
                (
                    "ArnLike: wildcard account and resource",
                    &[("aws:SourceArn", &["arn:airlock:iam::111122223333:role/admin-x"])],
                    true,
                ),
                (
                    "ArnLike: resource mismatch",
                    &[("aws:SourceArn", &["arn:airlock:iam::111122223333:role/user"])],
                    false,
                ),
                (
                    "ArnLike: empty region segment is literal",
                    &[("aws:SourceArn", &["arn:airlock:iam:us-east-1:111122223333:role/admin-x"])],
                    false,
                ),
                ("ArnLike: not an ARN", &[("aws:SourceArn", &["role/admin-x"])], false),
                (
                    "ArnLike: case-sensitive",
                    &[("aws:SourceArn", &["arn:airlock:iam::111122223333:ROLE/admin-x"])],
                    false,
                ),
                ("ArnLike: absent key false", &[], false),
            ],
        ),
        cond_group(
            "ArnEquals",
            false,
            r#"{"ArnEquals":{"aws:PrincipalArn":["arn:airlock:iam::111122223333:user/*","arn:airlock:iam::111122223333:role/ops"]}}"#,
            &[
                (
                    "ArnEquals honours wildcards like ArnLike",
                    &[("aws:PrincipalArn", &["arn:airlock:iam::111122223333:user/alice"])],
                    true,
                ),
                (
                    "ArnEquals: exact second value",
                    &[("aws:PrincipalArn", &["arn:airlock:iam::111122223333:role/ops"])],
                    true,
                ),
                (
                    "ArnEquals: no value matches",
                    &[("aws:PrincipalArn", &["arn:airlock:iam::111122223333:role/dev"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "ArnNotLike",
            false,
            r#"{"ArnNotLike":{"aws:PrincipalArn":"arn:airlock:iam::111122223333:role/breakglass"}}"#,
            &[
                (
                    "ArnNotLike: matching ARN → false",
                    &[("aws:PrincipalArn", &["arn:airlock:iam::111122223333:role/breakglass"])],
                    false,
                ),
                (
                    "ArnNotLike: other ARN → true",
                    &[("aws:PrincipalArn", &["arn:airlock:iam::111122223333:role/dev"])],
                    true,
                ),
                ("ArnNotLike: absent key true", &[], true),
            ],
        ),
        cond_group(
            "ArnNotEquals-variable",
            false,
            r#"{"ArnNotEquals":{"aws:PrincipalArn":"arn:airlock:iam::111122223333:user/${aws:username}"}}"#,
            &[
                (
                    "ArnNotEquals with variable: same user → false",
                    &[
                        ("aws:username", &["alice"]),
                        ("aws:PrincipalArn", &["arn:airlock:iam::111122223333:user/alice"]),
                    ],
                    false,
                ),
                (
                    "ArnNotEquals with variable: other user → true",
                    &[
                        ("aws:username", &["bob"]),
                        ("aws:PrincipalArn", &["arn:airlock:iam::111122223333:user/alice"]),
                    ],
                    true,
                ),
            ],
        ),
        cond_group(
            "BinaryEquals",
            false,
            r#"{"BinaryEquals":{"airlock:Blob":"aGVsbG8="}}"#,
            &[
                ("BinaryEquals: same bytes", &[("airlock:blob", &["aGVsbG8="])], true),
                (
                    "BinaryEquals: compares decoded bytes (padding optional)",
                    &[("airlock:blob", &["aGVsbG8"])],
                    true,
                ),
                ("BinaryEquals: other bytes", &[("airlock:blob", &["d29ybGQ="])], false),
                ("BinaryEquals: absent key false", &[], false),
            ],
        ),
    ]
}

fn existence() -> Vec<Group> {
    vec![
        cond_group(
            "Null-true",
            false,
            r#"{"Null":{"aws:TokenIssueTime":"true"}}"#,
            &[
                ("Null true: key absent", &[], true),
                ("Null true: key present", &[("aws:TokenIssueTime", &["2026-11-05T10:00:00Z"])], false),
                ("Null true: empty value set counts as absent", &[("aws:TokenIssueTime", &[])], true),
            ],
        ),
        cond_group(
            "Null-false",
            false,
            r#"{"Null":{"aws:PrincipalTag/team":false}}"#,
            &[
                ("Null false: key present", &[("aws:PrincipalTag/Team", &["blue"])], true),
                ("Null false: key absent", &[], false),
            ],
        ),
        cond_group(
            "StringEqualsIfExists",
            false,
            r#"{"StringEqualsIfExists":{"ssm:resourceTag/Environment":"dev"}}"#,
            &[
                ("StringEqualsIfExists: absent key", &[], true),
                ("StringEqualsIfExists: present match", &[("ssm:resourceTag/Environment", &["dev"])], true),
                (
                    "StringEqualsIfExists: present mismatch",
                    &[("ssm:resourceTag/Environment", &["prod"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "StringNotEqualsIfExists",
            false,
            r#"{"StringNotEqualsIfExists":{"ssm:resourceTag/Environment":"prod"}}"#,
            &[
                ("StringNotEqualsIfExists: absent key", &[], true),
                (
                    "StringNotEqualsIfExists: present prod",
                    &[("ssm:resourceTag/Environment", &["prod"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "NumericLessThanIfExists",
            false,
            r#"{"NumericLessThanIfExists":{"aws:MultiFactorAuthAge":"60"}}"#,
            &[
                ("NumericLessThanIfExists: absent key", &[], true),
                ("NumericLessThanIfExists: present too large", &[("aws:MultiFactorAuthAge", &["61"])], false),
            ],
        ),
        cond_group(
            "IpAddressIfExists",
            false,
            r#"{"IpAddressIfExists":{"aws:SourceIp":"10.0.0.0/8"}}"#,
            &[
                ("IpAddressIfExists: absent key", &[], true),
                ("IpAddressIfExists: present outside", &[("aws:SourceIp", &["8.8.8.8"])], false),
            ],
        ),
        cond_group(
            "DateLessThanIfExists+ArnLikeIfExists",
            false,
            r#"{"DateLessThanIfExists":{"aws:TokenIssueTime":"2026-01-01"},"ArnLikeIfExists":{"aws:SourceArn":"arn:airlock:ssm:*:*:*"}}"#,
            &[
                ("several IfExists operators, all keys absent", &[], true),
                ("IfExists: one present and failing", &[("aws:SourceArn", &["arn:airlock:s3:::b"])], false),
            ],
        ),
        cond_group(
            "Null+StringEquals-deny",
            true,
            r#"{"Null":{"aws:PrincipalTag/team":"true"}}"#,
            &[
                ("deny when tag missing (Null guard)", &[], true),
                ("Null guard passes when tag present", &[("aws:PrincipalTag/team", &["blue"])], false),
            ],
        ),
        cond_group(
            "deny-StringNotEquals-region",
            true,
            r#"{"StringNotEquals":{"aws:RequestedRegion":["eu-west-1","eu-central-1"]}}"#,
            &[
                ("deny outside approved regions", &[("aws:RequestedRegion", &["us-east-1"])], true),
                ("no deny in approved region", &[("aws:RequestedRegion", &["eu-central-1"])], false),
                ("absent key: negated deny applies", &[], true),
            ],
        ),
        cond_group(
            "deny-StringNotEqualsIfExists-region",
            true,
            r#"{"StringNotEqualsIfExists":{"aws:RequestedRegion":"eu-west-1"}}"#,
            &[
                ("IfExists on a negated deny: absent key applies", &[], true),
                (
                    "IfExists on a negated deny: allowed region",
                    &[("aws:RequestedRegion", &["eu-west-1"])],
                    false,
                ),
            ],
        ),
        cond_group(
            "deny-abac-team",
            true,
            r#"{"StringNotEquals":{"ssm:resourceTag/Team":"${aws:PrincipalTag/Team}"}}"#,
            &[
                (
                    "ABAC: tags equal, no deny",
                    &[("ssm:resourceTag/Team", &["blue"]), ("aws:PrincipalTag/Team", &["blue"])],
                    false,
                ),
                (
                    "ABAC: tags differ, deny",
                    &[("ssm:resourceTag/Team", &["red"]), ("aws:PrincipalTag/Team", &["blue"])],
                    true,
                ),
                (
                    "ABAC: principal tag missing → variable unresolved, deny",
                    &[("ssm:resourceTag/Team", &["red"])],
                    true,
                ),
                (
                    "ABAC: resource tag missing → negated true, deny",
                    &[("aws:PrincipalTag/Team", &["blue"])],
                    true,
                ),
            ],
        ),
        cond_group(
            "deny-NumericGreaterThan-mfa-age",
            true,
            r#"{"NumericGreaterThan":{"aws:MultiFactorAuthAge":"3600"}}"#,
            &[
                ("deny when MFA is stale", &[("aws:MultiFactorAuthAge", &["3601"])], true),
                ("no deny when MFA fresh", &[("aws:MultiFactorAuthAge", &["10"])], false),
                ("positive deny condition on absent key does not apply", &[], false),
            ],
        ),
        cond_group(
            "deny-DateGreaterThan-expiry",
            true,
            r#"{"DateGreaterThan":{"aws:CurrentTime":"2026-06-30T23:59:59Z"}}"#,
            &[
                ("deny after expiry", &[("aws:CurrentTime", &["2026-11-05T10:00:00Z"])], true),
                ("no deny before expiry", &[("aws:CurrentTime", &["2026-01-05T10:00:00Z"])], false),
            ],
        ),
    ]
}

/// Every group of this file.
pub(super) fn groups() -> Vec<Group> {
    let mut all = typed();
    all.extend(existence());
    all
}

#[test]
fn typed_and_existence_matrix() {
    run(&groups());
}
