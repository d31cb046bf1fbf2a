//! Matrix: ARN wildcards and policy variables.

use super::Want::{Allow, Deny, Implicit};
use super::{case, group, run, Group};

const ARN_P0: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"Instances","Effect":"Allow","Action":"ssm:StartSession","Resource":"arn:airlock:ssm:*:111122223333:managed-instance/mi-*"},
  {"Sid":"TeamDocs","Effect":"Allow","Action":"ssm:GetDocument","Resource":"arn:airlock:ssm:eu-west-?:111122223333:document/team-??"},
  {"Sid":"Sessions","Effect":"Allow","Action":"ssm:ResumeSession","Resource":"arn:airlock:ssm:eu-west-1:111122223333:session/*"},
  {"Sid":"Logs","Effect":"Allow","Action":"logs:PutLogEvents","Resource":"arn:airlock:logs:eu-west-1:111122223333:log-group:/airlock/*:*"},
  {"Sid":"List","Effect":"Allow","Action":"ssm:DescribeSessions","Resource":"*"},
  {"Sid":"Ec2","Effect":"Allow","Action":"ssm:StartSession","Resource":["arn:airlock:ec2:eu-west-1:111122223333:instance/i-0*","arn:airlock:ec2:eu-west-1:111122223333:instance/i-1234"]}
]}"#;

fn arns() -> Vec<Group> {
    let n: super::Ctx = &[];
    vec![group(
        "arn-wildcards",
        &[ARN_P0],
        vec![
            case(
                "wildcards in ARNs: any region",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:111122223333:managed-instance/mi-abc",
                n,
                Allow(0, 0),
            ),
            case(
                "ARN account segment is literal",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:444455556666:managed-instance/mi-abc",
                n,
                Implicit,
            ),
            case(
                "star in region cannot swallow colons (part-by-part ARN match)",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:444455556666:111122223333:managed-instance/mi-x",
                n,
                Implicit,
            ),
            case(
                "ARN resource part anchored",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:111122223333:instance/mi-abc",
                n,
                Implicit,
            ),
            case(
                "ARN partition segment is literal",
                "ssm:StartSession",
                "arn:aws:ssm:us-east-1:111122223333:managed-instance/mi-abc",
                n,
                Implicit,
            ),
            case(
                "trailing star matches empty",
                "ssm:StartSession",
                "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-",
                n,
                Allow(0, 0),
            ),
            case(
                "? matches exactly one character",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-1:111122223333:document/team-ab",
                n,
                Allow(0, 1),
            ),
            case(
                "? does not match two characters",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-1:111122223333:document/team-abc",
                n,
                Implicit,
            ),
            case(
                "? does not match zero characters",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-1:111122223333:document/team-a",
                n,
                Implicit,
            ),
            case(
                "? in region segment",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-3:111122223333:document/team-xy",
                n,
                Allow(0, 1),
            ),
            case(
                "? in region segment does not stretch",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-12:111122223333:document/team-xy",
                n,
                Implicit,
            ),
            case(
                "? matches one multibyte character",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-1:111122223333:document/team-üx",
                n,
                Allow(0, 1),
            ),
            case(
                "resource part may hold colons",
                "logs:PutLogEvents",
                "arn:airlock:logs:eu-west-1:111122223333:log-group:/airlock/web:log-stream:s1",
                n,
                Allow(0, 3),
            ),
            case(
                "colon required by pattern in resource part",
                "logs:PutLogEvents",
                "arn:airlock:logs:eu-west-1:111122223333:log-group:/airlock/web",
                n,
                Implicit,
            ),
            case(
                "session wildcard",
                "ssm:ResumeSession",
                "arn:airlock:ssm:eu-west-1:111122223333:session/alice-0123",
                n,
                Allow(0, 2),
            ),
            case(
                "non-ARN resource never matches an ARN pattern",
                "ssm:ResumeSession",
                "session/alice-0123",
                n,
                Implicit,
            ),
            case("Resource * matches a non-ARN resource", "ssm:DescribeSessions", "*", n, Allow(0, 4)),
            case(
                "Resource * matches any ARN",
                "ssm:DescribeSessions",
                "arn:airlock:ssm:eu-west-1:111122223333:session/x",
                n,
                Allow(0, 4),
            ),
            case(
                "resource list: second entry matches",
                "ssm:StartSession",
                "arn:airlock:ec2:eu-west-1:111122223333:instance/i-1234",
                n,
                Allow(0, 5),
            ),
            case(
                "resource list: first entry wildcard",
                "ssm:StartSession",
                "arn:airlock:ec2:eu-west-1:111122223333:instance/i-0abc",
                n,
                Allow(0, 5),
            ),
            case(
                "resource list: no entry matches",
                "ssm:StartSession",
                "arn:airlock:ec2:eu-west-1:111122223333:instance/i-12345",
                n,
                Implicit,
            ),
            case(
                "resource case-sensitive",
                "ssm:StartSession",
                "arn:airlock:ssm:eu-west-1:111122223333:Managed-Instance/mi-1",
                n,
                Implicit,
            ),
            case(
                "service segment case-sensitive",
                "ssm:StartSession",
                "arn:airlock:SSM:eu-west-1:111122223333:managed-instance/mi-1",
                n,
                Implicit,
            ),
        ],
    )]
}

const VARS_P0: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"OwnSessions","Effect":"Allow","Action":["ssm:TerminateSession","ssm:ResumeSession"],
   "Resource":"arn:airlock:ssm:*:*:session/${aws:username}-*"},
  {"Sid":"OwnInstances","Effect":"Allow","Action":"ssm:StartSession","Resource":"arn:airlock:ssm:*:*:managed-instance/*",
   "Condition":{"StringEquals":{"ssm:resourceTag/Owner":"${aws:username}"}}},
  {"Sid":"TeamDocs","Effect":"Allow","Action":"ssm:GetDocument","Resource":"arn:airlock:ssm:*:*:document/${aws:PrincipalTag/team}-*"},
  {"Sid":"ById","Effect":"Allow","Action":"ssm:DescribeSessions","Resource":"arn:airlock:ssm:*:*:session/${aws:userid, 'anonymous'}"},
  {"Sid":"Escapes","Effect":"Allow","Action":"s3:GetObject","Resource":"arn:airlock:s3:::bucket/${*}lit${?}${$}"},
  {"Sid":"AnyKey","Effect":"Allow","Action":"ssm:ListDocuments","Resource":"arn:airlock:ssm:*:*:document/${airlock:Custom}"},
  {"Sid":"Home","Effect":"Allow","Action":"s3:PutObject","Resource":"arn:airlock:s3:::home/*",
   "Condition":{"StringLike":{"s3:prefix":"home/${aws:username}/*"}}},
  {"Sid":"Quote","Effect":"Allow","Action":"s3:ListBucket","Resource":"arn:airlock:s3:::${aws:username, 'it''s'}"}
]}"#;

const MI: &str = "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-1";
const SESS: &str = "arn:airlock:ssm:eu-west-1:111122223333:session/alice-0123";

fn variables() -> Vec<Group> {
    vec![
        group(
            "variables",
            &[VARS_P0],
            vec![
                case(
                    "variables ${aws:username} in resource",
                    "ssm:TerminateSession",
                    SESS,
                    &[("aws:username", &["alice"])],
                    Allow(0, 0),
                ),
                case(
                    "variable: other user's session",
                    "ssm:TerminateSession",
                    SESS,
                    &[("aws:username", &["bob"])],
                    Implicit,
                ),
                case("missing variable → no match", "ssm:TerminateSession", SESS, &[], Implicit),
                case(
                    "substituted value compared case-sensitively",
                    "ssm:ResumeSession",
                    SESS,
                    &[("aws:username", &["ALICE"])],
                    Implicit,
                ),
                case(
                    "variable key looked up case-insensitively",
                    "ssm:ResumeSession",
                    SESS,
                    &[("AWS:UserName", &["alice"])],
                    Allow(0, 0),
                ),
                case(
                    "substituted value is literal, not a wildcard",
                    "ssm:ResumeSession",
                    SESS,
                    &[("aws:username", &["*"])],
                    Implicit,
                ),
                case(
                    "substituted literal star matches a literal star",
                    "ssm:ResumeSession",
                    "arn:airlock:ssm:eu-west-1:111122223333:session/*-1",
                    &[("aws:username", &["*"])],
                    Allow(0, 0),
                ),
                case(
                    "multivalued key is not substituted",
                    "ssm:ResumeSession",
                    SESS,
                    &[("aws:username", &["alice", "bob"])],
                    Implicit,
                ),
                case(
                    "variable in condition value",
                    "ssm:StartSession",
                    MI,
                    &[("aws:username", &["alice"]), ("ssm:resourceTag/Owner", &["alice"])],
                    Allow(0, 1),
                ),
                case(
                    "variable in condition value: mismatch",
                    "ssm:StartSession",
                    MI,
                    &[("aws:username", &["alice"]), ("ssm:resourceTag/Owner", &["bob"])],
                    Implicit,
                ),
                case(
                    "missing variable in condition value → no match",
                    "ssm:StartSession",
                    MI,
                    &[("ssm:resourceTag/Owner", &["alice"])],
                    Implicit,
                ),
                case(
                    "${aws:PrincipalTag/team} in resource",
                    "ssm:GetDocument",
                    "arn:airlock:ssm:eu-west-1:111122223333:document/blue-runbook",
                    &[("aws:PrincipalTag/team", &["blue"])],
                    Allow(0, 2),
                ),
                case(
                    "principal tag absent → no match",
                    "ssm:GetDocument",
                    "arn:airlock:ssm:eu-west-1:111122223333:document/blue-runbook",
                    &[],
                    Implicit,
                ),
                case(
                    "principal tag key case-insensitive",
                    "ssm:GetDocument",
                    "arn:airlock:ssm:eu-west-1:111122223333:document/blue-runbook",
                    &[("aws:principaltag/TEAM", &["blue"])],
                    Allow(0, 2),
                ),
                case(
                    "default value used when key absent",
                    "ssm:DescribeSessions",
                    "arn:airlock:ssm:eu-west-1:111122223333:session/anonymous",
                    &[],
                    Allow(0, 3),
                ),
                case(
                    "present key overrides default",
                    "ssm:DescribeSessions",
                    "arn:airlock:ssm:eu-west-1:111122223333:session/AIDA123",
                    &[("aws:userid", &["AIDA123"])],
                    Allow(0, 3),
                ),
                case(
                    "default not used when key present",
                    "ssm:DescribeSessions",
                    "arn:airlock:ssm:eu-west-1:111122223333:session/anonymous",
                    &[("aws:userid", &["AIDA123"])],
                    Implicit,
                ),
                case(
                    "${*} ${?} ${$} escapes are literal characters",
                    "s3:GetObject",
                    "arn:airlock:s3:::bucket/*lit?$",
                    &[],
                    Allow(0, 4),
                ),
                case(
                    "escaped star does not act as wildcard",
                    "s3:GetObject",
                    "arn:airlock:s3:::bucket/Xlit?$",
                    &[],
                    Implicit,
                ),
                case(
                    "escaped ? does not act as wildcard",
                    "s3:GetObject",
                    "arn:airlock:s3:::bucket/*litX$",
                    &[],
                    Implicit,
                ),
                case(
                    "any context key as variable",
                    "ssm:ListDocuments",
                    "arn:airlock:ssm:eu-west-1:111122223333:document/foo",
                    &[("airlock:custom", &["foo"])],
                    Allow(0, 5),
                ),
                case(
                    "variable in StringLike value",
                    "s3:PutObject",
                    "arn:airlock:s3:::home/x",
                    &[("aws:username", &["alice"]), ("s3:prefix", &["home/alice/docs"])],
                    Allow(0, 6),
                ),
                case(
                    "variable in StringLike value: other prefix",
                    "s3:PutObject",
                    "arn:airlock:s3:::home/x",
                    &[("aws:username", &["alice"]), ("s3:prefix", &["home/bob/docs"])],
                    Implicit,
                ),
                case(
                    "doubled quote in default is one quote",
                    "s3:ListBucket",
                    "arn:airlock:s3:::it's",
                    &[],
                    Allow(0, 7),
                ),
            ],
        ),
        group(
            "no-version-literal",
            &[
                r#"{"Statement":[{"Sid":"Lit","Effect":"Allow","Action":"ssm:TerminateSession","Resource":"arn:airlock:ssm:*:*:session/${aws:username}-*"}]}"#,
                r#"{"Version":"2008-10-17","Statement":{"Sid":"Lit08","Effect":"Allow","Action":"ssm:ResumeSession","Resource":"arn:airlock:ssm:*:*:session/${aws:username}-*"}}"#,
            ],
            vec![
                case(
                    "no Version: variables are literal text",
                    "ssm:TerminateSession",
                    SESS,
                    &[("aws:username", &["alice"])],
                    Implicit,
                ),
                case(
                    "no Version: literal ${…} text matches",
                    "ssm:TerminateSession",
                    "arn:airlock:ssm:eu-west-1:1:session/${aws:username}-1",
                    &[],
                    Allow(0, 0),
                ),
                case(
                    "2008-10-17: variables are literal text",
                    "ssm:ResumeSession",
                    SESS,
                    &[("aws:username", &["alice"])],
                    Implicit,
                ),
                case(
                    "2008-10-17: literal text matches; Statement as object",
                    "ssm:ResumeSession",
                    "arn:airlock:ssm:eu-west-1:1:session/${aws:username}-x",
                    &[],
                    Allow(1, 0),
                ),
            ],
        ),
    ]
}

const SHORT_P0: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllSsm","Effect":"Allow","Action":"ssm:StartSession","Resource":"arn:airlock:ssm:*"},
  {"Sid":"EuDocs","Effect":"Allow","Action":"ssm:GetDocument","Resource":"arn:airlock:ssm:eu-*"},
  {"Sid":"AccountLogs","Effect":"Allow","Action":"logs:PutLogEvents","Resource":"arn:airlock:logs:eu-west-1:1111*"},
  {"Sid":"OwnSessions","Effect":"Allow","Action":"ssm:ResumeSession","Resource":"arn:airlock:ssm:eu-west-1:111122223333:session/${aws:username}-*"},
  {"Sid":"NoProd","Effect":"Deny","Action":"ssm:StartSession","Resource":"arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-prod*"},
  {"Sid":"NamedUser","Effect":"Allow","Action":"ssm:TerminateSession","Resource":"arn:airlock:ssm:${aws:username}*"}
]}"#;

/// Fewer than six parts with a trailing `*`: IAM lets that `*` span the remaining parts.
fn short_arns() -> Vec<Group> {
    let n: super::Ctx = &[];
    let alice: super::Ctx = &[("aws:username", &["alice"])];
    vec![group(
        "short-arn-patterns",
        &[SHORT_P0],
        vec![
            case(
                "arn:…:ssm:* covers every SSM resource",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:444455556666:managed-instance/mi-abc",
                n,
                Allow(0, 0),
            ),
            case(
                "arn:…:ssm:* covers resource parts holding colons",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:444455556666:session:a:b",
                n,
                Allow(0, 0),
            ),
            case(
                "arn:…:ssm:* leading parts stay literal: service",
                "ssm:StartSession",
                "arn:airlock:ssmx:us-east-1:444455556666:managed-instance/mi-abc",
                n,
                Implicit,
            ),
            case(
                "arn:…:ssm:* leading parts stay literal: partition",
                "ssm:StartSession",
                "arn:aws:ssm:us-east-1:444455556666:managed-instance/mi-abc",
                n,
                Implicit,
            ),
            case("arn:…:ssm:* needs an ARN", "ssm:StartSession", "managed-instance/mi-abc", n, Implicit),
            case(
                "arn:…:ssm:* needs a six-part ARN",
                "ssm:StartSession",
                "arn:airlock:ssm:us-east-1:444455556666",
                n,
                Implicit,
            ),
            case(
                "Deny with a six-part pattern still wins over the short Allow",
                "ssm:StartSession",
                "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-prod-1",
                n,
                Deny(0, 4),
            ),
            case(
                "prefix in the spanning part: region",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-3:111122223333:document/x",
                n,
                Allow(0, 1),
            ),
            case(
                "prefix in the spanning part: other region",
                "ssm:GetDocument",
                "arn:airlock:ssm:us-east-1:111122223333:document/x",
                n,
                Implicit,
            ),
            case(
                "spanning part starts at its own part, not inside the previous one",
                "ssm:GetDocument",
                "arn:airlock:ssmeu-:x:111122223333:document/x",
                n,
                Implicit,
            ),
            case(
                "five parts: account prefix",
                "logs:PutLogEvents",
                "arn:airlock:logs:eu-west-1:111122223333:log-group:/a:log-stream:s",
                n,
                Allow(0, 2),
            ),
            case(
                "five parts: other account",
                "logs:PutLogEvents",
                "arn:airlock:logs:eu-west-1:222211113333:log-group:/a",
                n,
                Implicit,
            ),
            case(
                "five parts: region stays part by part",
                "logs:PutLogEvents",
                "arn:airlock:logs:eu-west-1a:111122223333:log-group:/a",
                n,
                Implicit,
            ),
            case(
                "variable in the spanning part",
                "ssm:TerminateSession",
                "arn:airlock:ssm:alice-region:1:session/x",
                alice,
                Allow(0, 5),
            ),
            case(
                "variable in the spanning part: other user",
                "ssm:TerminateSession",
                "arn:airlock:ssm:bob:1:session/x",
                alice,
                Implicit,
            ),
            case(
                "variable in the spanning part: unresolved",
                "ssm:TerminateSession",
                "arn:airlock:ssm:alice:1:session/x",
                n,
                Implicit,
            ),
            case(
                "six-part patterns are unchanged",
                "ssm:ResumeSession",
                "arn:airlock:ssm:eu-west-1:111122223333:session/alice-1",
                alice,
                Allow(0, 3),
            ),
        ],
    )]
}

/// Every group of this file.
pub(super) fn groups() -> Vec<Group> {
    let mut all = arns();
    all.extend(variables());
    all.extend(short_arns());
    all
}

#[test]
fn resource_matrix() {
    run(&groups());
}
