//! Matrix: a realistic Session Manager policy set (DESIGN §4, ssm-protocol §6).

use super::Want::{Allow, Deny, Implicit};
use super::{case, group, run, Group};

const MI: &str = "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-1";

/// A realistic Session Manager policy set (DESIGN §4, ssm-protocol §6).
const SSM_USER: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"StartOnTaggedInstances","Effect":"Allow","Action":"ssm:StartSession",
   "Resource":["arn:airlock:ssm:*:111122223333:managed-instance/*","arn:airlock:ec2:*:111122223333:instance/*"],
   "Condition":{"StringEquals":{"ssm:resourceTag/Environment":["dev","staging"]}}},
  {"Sid":"Documents","Effect":"Allow","Action":"ssm:StartSession",
   "Resource":["arn:airlock:ssm:*::document/AWS-StartSSHSession","arn:airlock:ssm:*:111122223333:document/SSM-SessionManagerRunShell"],
   "Condition":{"BoolIfExists":{"ssm:SessionDocumentAccessCheck":"true"}}},
  {"Sid":"OwnSessions","Effect":"Allow","Action":["ssm:TerminateSession","ssm:ResumeSession"],
   "Resource":"arn:airlock:ssm:*:*:session/${aws:userid}-*"},
  {"Sid":"Listing","Effect":"Allow","Action":["ssm:DescribeSessions","ssm:GetConnectionStatus","ssm:DescribeInstance*"],"Resource":"*"}
]}"#;

const GUARDRAILS: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"NoProd","Effect":"Deny","Action":"ssm:StartSession","Resource":"*",
   "Condition":{"StringEqualsIgnoreCase":{"ssm:resourceTag/Environment":"prod"}}},
  {"Sid":"RequireMfa","Effect":"Deny","NotAction":["ssm:Describe*","ssm:GetConnectionStatus"],"Resource":"*",
   "Condition":{"BoolIfExists":{"aws:MultiFactorAuthPresent":"false"}}},
  {"Sid":"CorpNetwork","Effect":"Deny","Action":"*","Resource":"*",
   "Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]}}}
]}"#;

const ADMIN: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"BreakGlass","Effect":"Allow","Action":"ssm:*","Resource":"*",
   "Condition":{"StringEquals":{"aws:PrincipalTag/role":"sre"},"NumericLessThan":{"aws:MultiFactorAuthAge":"3600"}}}
]}"#;

fn ssm() -> Vec<Group> {
    const EC2: &str = "arn:airlock:ec2:eu-west-1:111122223333:instance/i-0abc";
    const DOC: &str = "arn:airlock:ssm:eu-west-1::document/AWS-StartSSHSession";
    const OK: super::Ctx = &[
        ("aws:userid", &["AIDAALICE"]),
        ("aws:MultiFactorAuthPresent", &["true"]),
        ("aws:SourceIp", &["10.1.2.3"]),
    ];
    vec![group(
        "ssm-realistic",
        &[SSM_USER, GUARDRAILS, ADMIN],
        vec![
            case(
                "ssm:resourceTag/Environment dev allowed",
                "ssm:StartSession",
                MI,
                &[
                    ("ssm:resourceTag/Environment", &["dev"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.1.2.3"]),
                ],
                Allow(0, 0),
            ),
            case(
                "ssm:resourceTag/Environment staging allowed (values ORed)",
                "ssm:StartSession",
                EC2,
                &[
                    ("ssm:resourceTag/Environment", &["staging"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.1.2.3"]),
                ],
                Allow(0, 0),
            ),
            case(
                "ssm:resourceTag/Environment prod: guardrail deny",
                "ssm:StartSession",
                MI,
                &[
                    ("ssm:resourceTag/Environment", &["PROD"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.1.2.3"]),
                ],
                Deny(1, 0),
            ),
            case("untagged instance: implicit deny", "ssm:StartSession", MI, OK, Implicit),
            case("AWS-owned document with empty account allowed", "ssm:StartSession", DOC, OK, Allow(0, 1)),
            case(
                "BoolIfExists: access check true still allowed",
                "ssm:StartSession",
                DOC,
                &[
                    ("ssm:SessionDocumentAccessCheck", &["true"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.9.9.9"]),
                ],
                Allow(0, 1),
            ),
            case(
                "BoolIfExists: access check false blocks document",
                "ssm:StartSession",
                DOC,
                &[
                    ("ssm:SessionDocumentAccessCheck", &["false"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.9.9.9"]),
                ],
                Implicit,
            ),
            case(
                "MFA absent (long-term keys): BoolIfExists deny applies",
                "ssm:StartSession",
                DOC,
                &[("aws:SourceIp", &["10.9.9.9"])],
                Deny(1, 1),
            ),
            case(
                "MFA explicitly false: deny",
                "ssm:StartSession",
                DOC,
                &[("aws:MultiFactorAuthPresent", &["false"]), ("aws:SourceIp", &["10.1.2.3"])],
                Deny(1, 1),
            ),
            case(
                "MFA false does not block listing (NotAction)",
                "ssm:DescribeSessions",
                "*",
                &[("aws:MultiFactorAuthPresent", &["false"]), ("aws:SourceIp", &["10.1.2.3"])],
                Allow(0, 3),
            ),
            case(
                "outside corporate network: deny everything",
                "ssm:DescribeSessions",
                "*",
                &[("aws:SourceIp", &["198.51.100.7"])],
                Deny(1, 2),
            ),
            case(
                "IPv6 corporate address allowed",
                "ssm:DescribeInstanceInformation",
                "*",
                &[("aws:SourceIp", &["2001:db8:5::1"])],
                Allow(0, 3),
            ),
            case("missing SourceIp: NotIpAddress true, deny", "ssm:DescribeSessions", "*", &[], Deny(1, 2)),
            case(
                "own session by ${aws:userid}",
                "ssm:TerminateSession",
                "arn:airlock:ssm:eu-west-1:111122223333:session/AIDAALICE-0a1b2c",
                OK,
                Allow(0, 2),
            ),
            case(
                "someone else's session",
                "ssm:TerminateSession",
                "arn:airlock:ssm:eu-west-1:111122223333:session/AIDABOB-0a1b2c",
                OK,
                Implicit,
            ),
            case(
                "break-glass: tag and fresh MFA (multiple operators ANDed)",
                "ssm:CreateActivation",
                "*",
                &[
                    ("aws:PrincipalTag/role", &["sre"]),
                    ("aws:MultiFactorAuthAge", &["120"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.0.0.1"]),
                ],
                Allow(2, 0),
            ),
            case(
                "break-glass: stale MFA",
                "ssm:CreateActivation",
                "*",
                &[
                    ("aws:PrincipalTag/role", &["sre"]),
                    ("aws:MultiFactorAuthAge", &["7200"]),
                    ("aws:MultiFactorAuthPresent", &["true"]),
                    ("aws:SourceIp", &["10.0.0.1"]),
                ],
                Implicit,
            ),
            case(
                "break-glass cannot override the prod guardrail",
                "ssm:StartSession",
                MI,
                &[
                    ("aws:PrincipalTag/role", &["sre"]),
                    ("aws:MultiFactorAuthAge", &["1"]),
                    ("ssm:resourceTag/Environment", &["prod"]),
                    ("aws:SourceIp", &["10.0.0.1"]),
                ],
                Deny(1, 0),
            ),
        ],
    )]
}

/// Every group of this file.
pub(super) fn groups() -> Vec<Group> {
    ssm()
}

#[test]
fn ssm_matrix() {
    run(&groups());
}
