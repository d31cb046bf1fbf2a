//! Matrix: decision order, Action/NotAction, Resource/NotResource.

use super::Want::{Allow, Deny, Implicit};
use super::{case, group, run, Group};

const ORDER_P0: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllowSsmAll","Effect":"Allow","Action":"ssm:*","Resource":"*"},
  {"Sid":"DenyTerminate","Effect":"Deny","Action":"ssm:TerminateSession","Resource":"*"},
  {"Sid":"AllowDescribe","Effect":"Allow","Action":["ssm:Describe*","ssm:GetConnectionStatus"],"Resource":"*"}
]}"#;

const ORDER_P1: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"DenyProd","Effect":"Deny","Action":"ssm:StartSession",
   "Resource":"arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-prod*"},
  {"Sid":"AllowKms","Effect":"Allow","Action":"kms:GenerateDataKey","Resource":"arn:airlock:kms:eu-west-1:111122223333:key/*"},
  {"Effect":"Allow","Action":"ssmmessages:Open*","Resource":"*"}
]}"#;

const DEV: &str = "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-dev01";
const PROD: &str = "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-prod01";
const KEY: &str = "arn:airlock:kms:eu-west-1:111122223333:key/k1";

fn order() -> Vec<Group> {
    let n: super::Ctx = &[];
    vec![
        group(
            "order",
            &[ORDER_P0, ORDER_P1],
            vec![
                case("service wildcard ssm:* allows", "ssm:StartSession", DEV, n, Allow(0, 0)),
                case("deny after allow in same document wins", "ssm:TerminateSession", DEV, n, Deny(0, 1)),
                case("first matching allow is reported", "ssm:DescribeSessions", "*", n, Allow(0, 0)),
                case(
                    "deny in second policy overrides allow in first",
                    "ssm:StartSession",
                    PROD,
                    n,
                    Deny(1, 0),
                ),
                case("allow in second policy only", "kms:GenerateDataKey", KEY, n, Allow(1, 1)),
                case("unlisted action of listed service: implicit deny", "kms:Decrypt", KEY, n, Implicit),
                case("unlisted service: implicit deny", "s3:GetObject", "arn:airlock:s3:::b/k", n, Implicit),
                case("action name case-insensitive", "SSM:STARTSESSION", DEV, n, Allow(0, 0)),
                case("deny action case-insensitive", "ssm:terminatesession", DEV, n, Deny(0, 1)),
                case(
                    "resource case-sensitive: deny pattern misses MI-PROD",
                    "ssm:StartSession",
                    "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/MI-PROD01",
                    n,
                    Allow(0, 0),
                ),
                case(
                    "action without service prefix matches no service pattern",
                    "StartSession",
                    DEV,
                    n,
                    Implicit,
                ),
                case("empty action matches nothing", "", DEV, n, Implicit),
                case("ssm:* does not cover ssmmessages", "ssmmessages:CreateDataChannel", "*", n, Implicit),
                case("prefix wildcard in action name", "ssmmessages:OpenDataChannel", "*", n, Allow(1, 2)),
                case(
                    "statement without Sid reported by index",
                    "ssmmessages:OpenControlChannel",
                    "*",
                    n,
                    Allow(1, 2),
                ),
                case(
                    "deny resource wildcard with suffix",
                    "ssm:StartSession",
                    "arn:airlock:ssm:eu-west-1:111122223333:managed-instance/mi-prod",
                    n,
                    Deny(1, 0),
                ),
                case("deny only covers its action", "ssm:ResumeSession", PROD, n, Allow(0, 0)),
                case(
                    "kms key in other region: implicit deny",
                    "kms:GenerateDataKey",
                    "arn:airlock:kms:us-east-1:111122223333:key/k1",
                    n,
                    Implicit,
                ),
            ],
        ),
        group(
            "order-reversed",
            &[ORDER_P1, ORDER_P0],
            vec![
                case(
                    "deny in first policy wins over allow in second",
                    "ssm:StartSession",
                    PROD,
                    n,
                    Deny(0, 0),
                ),
                case(
                    "deny in second policy wins over allow in first",
                    "ssm:TerminateSession",
                    DEV,
                    n,
                    Deny(1, 1),
                ),
                case("allow reported from second policy", "ssm:StartSession", DEV, n, Allow(1, 0)),
                case("first allow in policy order is reported", "kms:GenerateDataKey", KEY, n, Allow(0, 1)),
            ],
        ),
        group(
            "deny-first-in-document",
            &[r#"{"Version":"2012-10-17","Statement":[
                {"Sid":"D","Effect":"Deny","Action":"ssm:Start*","Resource":"*"},
                {"Sid":"A","Effect":"Allow","Action":"ssm:StartSession","Resource":"*"},
                {"Sid":"D2","Effect":"Deny","Action":"ssm:StartSession","Resource":"*"}]}"#],
            vec![
                case("deny before allow wins", "ssm:StartSession", DEV, n, Deny(0, 0)),
                case("first of several matching denies is reported", "ssm:StartSession", "*", n, Deny(0, 0)),
                case("no statement covers the action", "ssm:ResumeSession", DEV, n, Implicit),
            ],
        ),
        group(
            "no-policies",
            &[],
            vec![case("no policies: implicit deny", "ssm:StartSession", DEV, n, Implicit)],
        ),
        group(
            "star-action",
            &[
                r#"{"Version":"2012-10-17","Statement":[{"Sid":"All","Effect":"Allow","Action":"*","Resource":"*"},
                {"Sid":"NoIam","Effect":"Deny","Action":"iam:*","Resource":"*"}]}"#,
            ],
            vec![
                case(
                    "Action * covers every service",
                    "logs:PutLogEvents",
                    "arn:airlock:logs:eu-west-1:1:log-group:x",
                    n,
                    Allow(0, 0),
                ),
                case("Action * covers an action without prefix", "Whatever", "*", n, Allow(0, 0)),
                case("service-wide deny beats Action *", "iam:CreateUser", "*", n, Deny(0, 1)),
                case("service-wide deny, mixed case service", "IAM:createuser", "*", n, Deny(0, 1)),
            ],
        ),
    ]
}

const NOT_P0: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Sid":"AllowAllButIam","Effect":"Allow","NotAction":["iam:*","sts:*"],"Resource":"*"},
  {"Sid":"DenyOutsideAccount","Effect":"Deny","Action":"ssm:*",
   "NotResource":["arn:airlock:ssm:*:111122223333:*","arn:airlock:ssm:*::document/AWS-*"]},
  {"Sid":"LockedKeysReadOnly","Effect":"Deny","NotAction":["kms:Describe*","kms:List*","kms:Get*"],
   "Resource":"arn:airlock:kms:*:*:key/locked-*"}
]}"#;

fn not_elements() -> Vec<Group> {
    let n: super::Ctx = &[];
    vec![group(
        "notaction-notresource",
        &[NOT_P0],
        vec![
            case("NotAction excludes listed action", "iam:CreateUser", "*", n, Implicit),
            case("NotAction excludes second listed service", "sts:AssumeRole", "*", n, Implicit),
            case("NotAction exclusion is case-insensitive", "IAM:PassRole", "*", n, Implicit),
            case("NotAction applies to every unlisted action", "ssm:StartSession", DEV, n, Allow(0, 0)),
            case(
                "NotAction applies to other services",
                "s3:GetObject",
                "arn:airlock:s3:::bucket/k",
                n,
                Allow(0, 0),
            ),
            case(
                "NotResource: resource outside the list is denied",
                "ssm:StartSession",
                "arn:airlock:ssm:eu-west-1:999999999999:managed-instance/mi-1",
                n,
                Deny(0, 1),
            ),
            case("NotResource: listed resource excluded", "ssm:StartSession", DEV, n, Allow(0, 0)),
            case(
                "NotResource: empty account segment excluded by pattern",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-1::document/AWS-StartSSHSession",
                n,
                Allow(0, 0),
            ),
            case(
                "NotResource: empty account not matched by other patterns",
                "ssm:GetDocument",
                "arn:airlock:ssm:eu-west-1::document/Custom",
                n,
                Deny(0, 1),
            ),
            case(
                "NotResource: a non-ARN resource is outside every pattern",
                "ssm:DescribeSessions",
                "*",
                n,
                Deny(0, 1),
            ),
            case(
                "NotAction in a Deny: unlisted action denied",
                "kms:Decrypt",
                "arn:airlock:kms:eu-west-1:111122223333:key/locked-1",
                n,
                Deny(0, 2),
            ),
            case(
                "NotAction in a Deny: listed action passes",
                "kms:DescribeKey",
                "arn:airlock:kms:eu-west-1:111122223333:key/locked-1",
                n,
                Allow(0, 0),
            ),
            case(
                "NotAction in a Deny: other resource unaffected",
                "kms:Decrypt",
                "arn:airlock:kms:eu-west-1:111122223333:key/open-1",
                n,
                Allow(0, 0),
            ),
            case(
                "NotAction deny covers even actions the allow excludes",
                "iam:CreateUser",
                "arn:airlock:kms:eu-west-1:111122223333:key/locked-1",
                n,
                Deny(0, 2),
            ),
        ],
    )]
}

/// Every group of this file.
pub(super) fn groups() -> Vec<Group> {
    let mut all = order();
    all.extend(not_elements());
    all
}

#[test]
fn order_matrix() {
    run(&groups());
}
