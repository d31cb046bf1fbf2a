//! Tests of `iam_cmd`: each command line and the exact body it sends.

use super::*;
use clap::Parser;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    iam: IamCommand,
}

fn parse(args: &[&str]) -> Result<ApiCall, clap::Error> {
    let argv = std::iter::once("iam").chain(args.iter().copied());
    Cli::try_parse_from(argv).map(|c| c.iam.into_call())
}

fn call(args: &str) -> ApiCall {
    let words: Vec<&str> = args.split(' ').collect();
    parse(&words).unwrap_or_else(|e| panic!("{args}: {e}"))
}

const POLICY: &str = "arn:airlock:iam::000000000000:policy/Ops";
const DOC: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

#[test]
fn every_command_sends_its_body() {
    let cases: Vec<(&str, &str, Value)> = vec![
        ("create-user --user-name bob", "CreateUser", json!({"UserName": "bob"})),
        (
            "create-user --user-name bob --tags Key=team,Value=ops Key=env,Value=prod --tags Key=a,Value=",
            "CreateUser",
            json!({"UserName": "bob", "Tags": [
                {"Key": "team", "Value": "ops"}, {"Key": "env", "Value": "prod"}, {"Key": "a", "Value": ""}
            ]}),
        ),
        ("delete-user --user-name bob", "DeleteUser", json!({"UserName": "bob"})),
        ("list-users", "ListUsers", json!({})),
        (
            "tag-user --user-name bob --tags Key=team,Value=ops",
            "TagUser",
            json!({"UserName": "bob", "Tags": [{"Key": "team", "Value": "ops"}]}),
        ),
        (
            "untag-user --user-name bob --tag-keys team env",
            "UntagUser",
            json!({"UserName": "bob", "TagKeys": ["team", "env"]}),
        ),
        ("create-role --role-name ops", "CreateRole", json!({"RoleName": "ops"})),
        (
            "create-role --role-name ops --tags Key=tier,Value=1",
            "CreateRole",
            json!({"RoleName": "ops", "Tags": [{"Key": "tier", "Value": "1"}]}),
        ),
        ("delete-role --role-name ops", "DeleteRole", json!({"RoleName": "ops"})),
        ("list-roles", "ListRoles", json!({})),
        (
            "tag-role --role-name ops --tags Key=tier,Value=1",
            "TagRole",
            json!({"RoleName": "ops", "Tags": [{"Key": "tier", "Value": "1"}]}),
        ),
        (
            "untag-role --role-name ops --tag-keys tier",
            "UntagRole",
            json!({"RoleName": "ops", "TagKeys": ["tier"]}),
        ),
        ("create-access-key --user-name bob", "CreateAccessKey", json!({"UserName": "bob"})),
        ("list-access-keys --user-name bob", "ListAccessKeys", json!({"UserName": "bob"})),
        (
            "update-access-key --user-name bob --access-key-id AKIA1 --status Inactive",
            "UpdateAccessKey",
            json!({"UserName": "bob", "AccessKeyId": "AKIA1", "Status": "Inactive"}),
        ),
        (
            "delete-access-key --user-name bob --access-key-id AKIA1",
            "DeleteAccessKey",
            json!({"UserName": "bob", "AccessKeyId": "AKIA1"}),
        ),
        (
            "get-user-policy --user-name bob --policy-name P",
            "GetUserPolicy",
            json!({"UserName": "bob", "PolicyName": "P"}),
        ),
        (
            "delete-user-policy --user-name bob --policy-name P",
            "DeleteUserPolicy",
            json!({"UserName": "bob", "PolicyName": "P"}),
        ),
        ("list-user-policies --user-name bob", "ListUserPolicies", json!({"UserName": "bob"})),
        (
            "get-role-policy --role-name ops --policy-name P",
            "GetRolePolicy",
            json!({"RoleName": "ops", "PolicyName": "P"}),
        ),
        (
            "delete-role-policy --role-name ops --policy-name P",
            "DeleteRolePolicy",
            json!({"RoleName": "ops", "PolicyName": "P"}),
        ),
        ("list-role-policies --role-name ops", "ListRolePolicies", json!({"RoleName": "ops"})),
        ("delete-policy --policy-arn X", "DeletePolicy", json!({"PolicyArn": "X"})),
        ("list-policies", "ListPolicies", json!({})),
        (
            "attach-user-policy --user-name bob --policy-arn X",
            "AttachUserPolicy",
            json!({"UserName": "bob", "PolicyArn": "X"}),
        ),
        (
            "detach-user-policy --user-name bob --policy-arn X",
            "DetachUserPolicy",
            json!({"UserName": "bob", "PolicyArn": "X"}),
        ),
        (
            "attach-role-policy --role-name ops --policy-arn X",
            "AttachRolePolicy",
            json!({"RoleName": "ops", "PolicyArn": "X"}),
        ),
        (
            "detach-role-policy --role-name ops --policy-arn X",
            "DetachRolePolicy",
            json!({"RoleName": "ops", "PolicyArn": "X"}),
        ),
        (
            "list-attached-user-policies --user-name bob",
            "ListAttachedUserPolicies",
            json!({"UserName": "bob"}),
        ),
        (
            "list-attached-role-policies --role-name ops",
            "ListAttachedRolePolicies",
            json!({"RoleName": "ops"}),
        ),
        ("list-audit-events", "ListAuditEvents", json!({})),
        (
            "list-audit-events --max-results 10 --next-token abc",
            "ListAuditEvents",
            json!({"MaxResults": 10, "NextToken": "abc"}),
        ),
    ];
    for (args, operation, body) in cases {
        let c = call(args);
        assert_eq!(
            (c.service, c.operation, &c.body, c.output),
            (Service::Iam, operation, &body, Output::Json),
            "{args}"
        );
        assert_eq!(c.target(), format!("AirlockIAM.{operation}"));
    }
}

#[test]
fn inline_documents_are_sent_as_text() {
    for (args, operation, name_member) in [
        (["put-user-policy", "--user-name", "bob"], "PutUserPolicy", ("UserName", "bob")),
        (["put-role-policy", "--role-name", "ops"], "PutRolePolicy", ("RoleName", "ops")),
    ] {
        let mut argv = args.to_vec();
        argv.extend(["--policy-name", "P", "--policy-document", DOC]);
        let c = parse(&argv).unwrap();
        assert_eq!(c.operation, operation);
        assert_eq!(c.body, json!({name_member.0: name_member.1, "PolicyName": "P", "PolicyDocument": DOC}));
    }
    let c = parse(&["create-policy", "--policy-name", "Ops", "--policy-document", DOC]).unwrap();
    assert_eq!(c.body, json!({"PolicyName": "Ops", "PolicyDocument": DOC}));
    assert_eq!(c.body["PolicyDocument"].as_str(), Some(DOC), "a string member, not parsed JSON");
}

#[test]
fn documents_load_from_files() {
    let path = std::env::temp_dir().join(format!("airlock-iam-cmd-{}.json", std::process::id()));
    let text = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": []\n}\n";
    std::fs::write(&path, text).unwrap();
    let uri = format!("file://{}", path.display());
    let c =
        parse(&["put-user-policy", "--user-name", "bob", "--policy-name", "P", "--policy-document", &uri]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(c.unwrap().body["PolicyDocument"], text);
}

#[test]
fn a_missing_file_is_a_usage_error() {
    let err = parse(&[
        "create-policy",
        "--policy-name",
        "P",
        "--policy-document",
        "file:///nonexistent/airlock/policy.json",
    ])
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(text.contains("Unable to load paramfile file:///nonexistent/airlock/policy.json: "), "{text}");
}

#[test]
fn tags_in_json_and_tag_keys_in_json() {
    let c = parse(&[
        "tag-user",
        "--user-name",
        "bob",
        "--tags",
        r#"[{"Key":"a","Value":"1"},{"Key":"b","Value":"2"}]"#,
    ])
    .unwrap();
    assert_eq!(c.body["Tags"], json!([{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]));
    let c = parse(&["untag-role", "--role-name", "ops", "--tag-keys", r#"["a","b"]"#, "c"]).unwrap();
    assert_eq!(c.body["TagKeys"], json!(["a", "b", "c"]));
}

#[test]
fn simulate_is_an_iam_command() {
    let c = call("simulate --principal arn:airlock:iam::0:user/bob --action ssm:StartSession --output json");
    assert_eq!(c.target(), "AirlockIAM.SimulatePrincipalPolicy");
    assert_eq!(c.output, Output::Simulation(crate::simulate::SimulateOutput::Json));
    assert_eq!(
        c.body,
        json!({"PolicySourceArn": "arn:airlock:iam::0:user/bob", "ActionNames": ["ssm:StartSession"]})
    );
    let c = call("simulate-principal-policy --policy-source-arn P --action-names a:B");
    assert_eq!(c.operation, "SimulatePrincipalPolicy");
    assert_eq!(c.output, Output::Simulation(crate::simulate::SimulateOutput::Text));
}

#[test]
fn usage_errors() {
    for bad in [
        "create-user",
        "create-user --user-name bob --tags team=ops",
        "create-user --user-name bob --tags Key=team",
        "create-user --user-name bob --tags",
        "tag-user --user-name bob",
        "untag-user --user-name bob",
        "untag-user --user-name bob --tag-keys [1]",
        "create-role --user-name bob",
        "update-access-key --user-name bob --access-key-id AKIA1",
        "update-access-key --user-name bob --access-key-id AKIA1 --status Disabled",
        "delete-access-key --user-name bob",
        "put-user-policy --user-name bob --policy-name P",
        "attach-role-policy --role-name ops",
        "delete-policy",
        "list-audit-events --max-results many",
        "list-users --user-name bob",
        "frobnicate-user",
    ] {
        let words: Vec<&str> = bad.split(' ').collect();
        let err = parse(&words).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{bad}: {err}");
    }
    let err = parse(&["create-user", "--user-name", "bob", "--tags", "Key=,Value=x"]).unwrap_err();
    assert!(err.to_string().contains("invalid tag \"Key=,Value=x\": the Key is empty"), "{err}");
}

#[test]
fn managed_policy_arns_pass_through() {
    let c = parse(&["attach-user-policy", "--user-name", "bob", "--policy-arn", POLICY]).unwrap();
    assert_eq!(c.body, json!({"UserName": "bob", "PolicyArn": POLICY}));
}
