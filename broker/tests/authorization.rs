//! Every operation authorizes exactly its own resource: a principal with no rights is refused
//! everything, a principal with every right on *other* resources is refused too, and an
//! operation can never be pointed at a resource of another kind through a stray member.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::SystemTime;

use airlock_broker::api::ops::Service;
use airlock_broker::api::Op;
use common::Broker;
use serde_json::{json, Value};

const VICTIM_INSTANCE: &str = "mi-0000000000000abcd";

/// A complete, valid request for `op` that names resources nobody in this test may touch.
fn sample(op: Op, account: &str) -> Value {
    let content = json!({"schemaVersion": "1.0", "description": "d", "sessionType": "Standard_Stream",
        "inputs": {}})
    .to_string();
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let victim_policy = format!("arn:airlock:iam::{account}:policy/victim-policy");
    let victim_mfa = format!("arn:airlock:iam::{account}:mfa/victim-mfa");
    match op {
        Op::CreateActivation => json!({"IamRole": "r"}),
        Op::DescribeActivations
        | Op::DescribeInstanceInformation
        | Op::ListDocuments
        | Op::ListRecordings
        | Op::GetRecordingStatus
        | Op::ListUsers
        | Op::ListRoles
        | Op::ListPolicies
        | Op::ListAuditEvents
        | Op::VerifyAuditLog => json!({}),
        Op::DeleteActivation => json!({"ActivationId": "00000000-0000-0000-0000-000000000000"}),
        Op::RegisterManagedInstance => json!({}),
        Op::GetConnectionStatus | Op::StartSession => json!({"Target": VICTIM_INSTANCE}),
        Op::DeregisterManagedInstance => json!({"InstanceId": VICTIM_INSTANCE}),
        Op::ResumeSession | Op::TerminateSession => json!({"SessionId": "victim-0123456789abcdef0"}),
        Op::DescribeSessions => json!({"State": "Active"}),
        Op::AddTagsToResource => json!({"ResourceType": "ManagedInstance", "ResourceId": VICTIM_INSTANCE,
            "Tags": [{"Key": "k", "Value": "v"}]}),
        Op::RemoveTagsFromResource => {
            json!({"ResourceType": "ManagedInstance", "ResourceId": VICTIM_INSTANCE, "TagKeys": ["k"]})
        }
        Op::ListTagsForResource => json!({"ResourceType": "ManagedInstance", "ResourceId": VICTIM_INSTANCE}),
        Op::CreateDocument => json!({"Name": "Victim-Doc", "Content": content, "DocumentType": "Session"}),
        Op::UpdateDocument => json!({"Name": "Victim-Doc", "Content": content}),
        Op::GetDocument | Op::DescribeDocument | Op::DeleteDocument => json!({"Name": "Victim-Doc"}),
        Op::GetRecording => json!({"SessionId": "victim-0123456789abcdef0"}),
        Op::SearchRecordings => json!({"Pattern": "secret"}),
        Op::CreateUser
        | Op::GetUser
        | Op::DeleteUser
        | Op::CreateAccessKey
        | Op::ListAccessKeys
        | Op::ListUserPolicies
        | Op::ListAttachedUserPolicies => json!({"UserName": "victim"}),
        Op::CreateRole
        | Op::GetRole
        | Op::DeleteRole
        | Op::ListRolePolicies
        | Op::ListAttachedRolePolicies => {
            json!({"RoleName": "victim-role"})
        }
        Op::TagUser => json!({"UserName": "victim", "Tags": [{"Key": "SSMSessionRunAs", "Value": "root"}]}),
        Op::UpdateAssumeRolePolicy => json!({"RoleName": "victim-role", "PolicyDocument":
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRole"}]}"#}),
        Op::TagRole => {
            json!({"RoleName": "victim-role", "Tags": [{"Key": "SSMSessionRunAs", "Value": "root"}]})
        }
        Op::UntagUser => json!({"UserName": "victim", "TagKeys": ["k"]}),
        Op::UntagRole => json!({"RoleName": "victim-role", "TagKeys": ["k"]}),
        Op::UpdateAccessKey => {
            json!({"UserName": "victim", "AccessKeyId": "AKIA0000000000000000", "Status": "Inactive"})
        }
        Op::DeleteAccessKey => json!({"UserName": "victim", "AccessKeyId": "AKIA0000000000000000"}),
        Op::PutUserPolicy => json!({"UserName": "victim", "PolicyName": "p", "PolicyDocument": policy}),
        Op::PutRolePolicy => json!({"RoleName": "victim-role", "PolicyName": "p", "PolicyDocument": policy}),
        Op::GetUserPolicy | Op::DeleteUserPolicy => json!({"UserName": "victim", "PolicyName": "p"}),
        Op::GetRolePolicy | Op::DeleteRolePolicy => json!({"RoleName": "victim-role", "PolicyName": "p"}),
        Op::CreatePolicy => json!({"PolicyName": "victim-policy", "PolicyDocument": policy}),
        Op::DeletePolicy => json!({"PolicyArn": victim_policy}),
        Op::AttachUserPolicy | Op::DetachUserPolicy => {
            json!({"UserName": "victim", "PolicyArn": victim_policy})
        }
        Op::AttachRolePolicy | Op::DetachRolePolicy => {
            json!({"RoleName": "victim-role", "PolicyArn": victim_policy})
        }
        Op::SimulatePrincipalPolicy => {
            json!({"PolicySourceArn": format!("arn:airlock:iam::{account}:user/victim"),
            "ActionNames": ["ssm:StartSession"]})
        }
        Op::AssumeRole => json!({"RoleArn": format!("arn:airlock:iam::{account}:role/victim-role"),
            "RoleSessionName": "s1"}),
        Op::CreateLoginProfile => json!({"UserName": "victim", "Password": "a fine long password"}),
        Op::UpdateLoginProfile => json!({"UserName": "victim", "Password": "another long password"}),
        Op::DeleteLoginProfile | Op::GetLoginProfile | Op::ListMFADevices => json!({"UserName": "victim"}),
        // On the caller's own user, which neither test principal may change.
        Op::ChangePassword => json!({"OldPassword": "a fine long password", "NewPassword": "x"}),
        Op::CreateVirtualMFADevice => json!({"VirtualMFADeviceName": "victim-mfa"}),
        Op::EnableMFADevice => json!({"UserName": "victim", "SerialNumber": victim_mfa,
            "AuthenticationCode1": "123456", "AuthenticationCode2": "654321"}),
        Op::DeactivateMFADevice => json!({"UserName": "victim", "SerialNumber": victim_mfa}),
        Op::DeleteVirtualMFADevice => json!({"SerialNumber": victim_mfa}),
        Op::SendCommand => json!({"DocumentName": "AWS-RunShellScript", "InstanceIds": [VICTIM_INSTANCE],
            "Parameters": {"commands": ["id"]}}),
        Op::ListCommands | Op::ListCommandInvocations => json!({}),
        Op::GetCommandInvocation => {
            json!({"CommandId": "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8c", "InstanceId": VICTIM_INSTANCE})
        }
        Op::CancelCommand => json!({"CommandId": "0b5c3a4e-2f1d-4c8e-9a6b-3d2e1f0a9b8c"}),
    }
}

fn target(op: Op) -> String {
    format!("{}{}", op.service().target_prefix(), op.name())
}

fn denied_code(op: Op) -> &'static str {
    match op.service() {
        Service::Ssm | Service::Recordings => "AccessDeniedException",
        Service::Iam | Service::Sts => "AccessDenied",
    }
}

struct Principal {
    key: String,
    secret: String,
}

fn user(broker: &Broker, name: &str, policy: Option<Value>) -> Principal {
    broker.api(&["iam", "create-user", "--user-name", name]);
    if let Some(doc) = policy {
        broker.api(&[
            "iam",
            "put-user-policy",
            "--user-name",
            name,
            "--policy-name",
            "p",
            "--policy-document",
            &doc.to_string(),
        ]);
    }
    let k = broker.api(&["iam", "create-access-key", "--user-name", name]);
    Principal {
        key: k["AccessKey"]["AccessKeyId"].as_str().unwrap().to_owned(),
        secret: k["AccessKey"]["SecretAccessKey"].as_str().unwrap().to_owned(),
    }
}

fn call(broker: &Broker, who: &Principal, target: &str, body: &Value) -> (u16, Value) {
    broker.raw_call(target, &body.to_string(), &who.key, &who.secret, SystemTime::now())
}

fn account(broker: &Broker) -> String {
    let v = broker.api(&["iam", "list-users"]);
    let arn = v["Users"][0]["Arn"].as_str().unwrap().to_owned();
    arn.split(':').nth(4).unwrap().to_owned()
}

#[test]
fn every_operation_refuses_no_rights_and_rights_elsewhere() {
    let broker = Broker::start();
    let account = account(&broker);
    let nobody = user(&broker, "nobody", None);
    // Every action, on resources of every kind that no sample names.
    let elsewhere_resources = [
        format!("arn:airlock:ssm:*:{account}:managed-instance/mi-0000000000000ffff"),
        "arn:airlock:ssm:*:*:session/other-*".to_owned(),
        "arn:airlock:ssm:*:*:document/Other-Doc".to_owned(),
        format!("arn:airlock:iam::{account}:user/other"),
        format!("arn:airlock:iam::{account}:role/other-role"),
        format!("arn:airlock:iam::{account}:policy/other-policy"),
        format!("arn:airlock:iam::{account}:mfa/other-mfa"),
    ];
    let elsewhere = user(
        &broker,
        "elsewhere",
        Some(json!({"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": elsewhere_resources}]})),
    );
    let mut checked = 0;
    for &op in Op::ALL {
        if op == Op::RegisterManagedInstance {
            continue; // authenticated by its activation code, not by a policy
        }
        let body = sample(op, &account);
        for (who, name) in [(&nobody, "nobody"), (&elsewhere, "elsewhere")] {
            let (status, v) = call(&broker, who, &target(op), &body);
            assert_eq!(
                (status, v["__type"].as_str()),
                (400, Some(denied_code(op))),
                "{} as {name}: {v}",
                op.name()
            );
            let message = v["message"].as_str().unwrap();
            assert!(message.contains(&format!("perform: {} on resource", op.action())), "{message}");
        }
        checked += 1;
    }
    assert!(checked > 50, "{checked} operations checked");
    // Nothing was created, changed or revealed along the way.
    let users = broker.api(&["iam", "list-users"]);
    let names: Vec<&str> =
        users["Users"].as_array().unwrap().iter().map(|u| u["UserName"].as_str().unwrap()).collect();
    assert!(!names.contains(&"victim"), "{names:?}");
}

#[test]
fn role_operations_cannot_reach_users() {
    let broker = Broker::start();
    let account = account(&broker);
    // May write policies of roles and tag roles, on any resource.
    let mallory = user(
        &broker,
        "mallory",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:TagRole",
                "iam:DeleteRole", "iam:ListUserPolicies", "iam:GetUser"], "Resource": "*"}]})),
    );
    let admin = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    let attempts = [
        (
            "AirlockIAM.PutRolePolicy",
            json!({"UserName": "mallory", "PolicyName": "admin", "PolicyDocument": admin}),
        ),
        (
            "AirlockIAM.PutRolePolicy",
            json!({"RoleName": "nope", "UserName": "mallory", "PolicyName": "admin", "PolicyDocument": admin}),
        ),
        (
            "AirlockIAM.TagRole",
            json!({"UserName": "mallory", "Tags": [{"Key": "SSMSessionRunAs", "Value": "root"}]}),
        ),
        ("AirlockIAM.DeleteRole", json!({"UserName": "mallory"})),
    ];
    for (target, body) in &attempts {
        let (status, v) = call(&broker, &mallory, target, body);
        assert_eq!((status, v["__type"].as_str()), (400, Some("SerializationException")), "{target}: {v}");
    }
    // Mallory is unchanged: no new policy, no run-as tag.
    let (_, v) = call(&broker, &mallory, "AirlockIAM.ListUserPolicies", &json!({"UserName": "mallory"}));
    assert_eq!(v["PolicyNames"], json!(["p"]), "{v}");
    let (_, v) = call(&broker, &mallory, "AirlockIAM.GetUser", &json!({"UserName": "mallory"}));
    assert_eq!(v["User"]["Tags"], json!([]), "{v}");
    assert_eq!(v["User"]["Arn"], format!("arn:airlock:iam::{account}:user/mallory"));
}

#[test]
fn operations_without_a_principal_ignore_no_stray_member() {
    let broker = Broker::start();
    let account = account(&broker);
    // Allowed everything on its own user, explicitly denied every managed policy.
    let eve = user(
        &broker,
        "eve",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iam:*", "Resource": format!("arn:airlock:iam::{account}:user/eve")},
            {"Effect": "Allow", "Action": "iam:CreatePolicy", "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "Resource": format!("arn:airlock:iam::{account}:policy/*")}]})),
    );
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    // A stray UserName once made this authorized on user/eve, bypassing the Deny.
    let (status, v) = call(
        &broker,
        &eve,
        "AirlockIAM.CreatePolicy",
        &json!({"UserName": "eve", "PolicyName": "admin", "PolicyDocument": doc}),
    );
    assert_eq!((status, v["__type"].as_str()), (400, Some("SerializationException")), "{v}");
    let (status, v) = call(
        &broker,
        &eve,
        "AirlockIAM.CreatePolicy",
        &json!({"PolicyName": "admin", "PolicyDocument": doc}),
    );
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDenied")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("explicit deny"), "{v}");
    let (status, v) = call(&broker, &eve, "AirlockIAM.ListAuditEvents", &json!({"UserName": "eve"}));
    assert_eq!((status, v["__type"].as_str()), (400, Some("SerializationException")), "{v}");
}

#[test]
fn simulation_is_authorized_on_the_simulated_principal() {
    let broker = Broker::start();
    let account = account(&broker);
    broker.api(&["iam", "create-role", "--role-name", "ops"]);
    let auditor = user(
        &broker,
        "auditor",
        Some(json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "iam:SimulatePrincipalPolicy", "Resource": format!("arn:airlock:iam::{account}:role/ops")}]})),
    );
    let simulate = |arn: String| {
        call(
            &broker,
            &auditor,
            "AirlockIAM.SimulatePrincipalPolicy",
            &json!({"PolicySourceArn": arn, "ActionNames": ["ssm:StartSession"]}),
        )
    };
    let (status, v) = simulate(format!("arn:airlock:iam::{account}:role/ops"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["EvaluationResults"][0]["EvalDecision"], "implicitDeny");
    // A session of the role reveals the role's policies, so the same right covers it.
    let (status, v) = simulate(format!("arn:airlock:sts::{account}:assumed-role/ops/laptop"));
    assert_eq!(status, 200, "{v}");
    // Another principal's policies are not the auditor's to read.
    let (status, v) = simulate(format!("arn:airlock:iam::{account}:user/auditor"));
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDenied")), "{v}");
}

#[test]
fn assuming_a_role_needs_the_callers_policy_and_the_roles_trust() {
    let broker = Broker::start();
    let account = account(&broker);
    let may_assume = json!({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]});
    let alice = user(&broker, "alice", Some(may_assume.clone()));
    let bob = user(&broker, "bob", Some(may_assume));
    let carol = user(&broker, "carol", None);
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": [format!("arn:airlock:iam::{account}:user/alice"),
                              format!("arn:airlock:iam::{account}:user/carol")]},
        "Action": "sts:AssumeRole"}]});
    broker.api(&[
        "iam",
        "create-role",
        "--role-name",
        "ops",
        "--assume-role-policy-document",
        &trust.to_string(),
    ]);
    let assume = |who: &Principal| {
        call(
            &broker,
            who,
            "AirlockSTS.AssumeRole",
            &json!({"RoleArn": format!("arn:airlock:iam::{account}:role/ops"), "RoleSessionName": "s1"}),
        )
    };
    assert_eq!(assume(&alice).0, 200, "trusted and allowed");
    let (status, v) = assume(&bob);
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDenied")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("trust policy"), "{v}");
    let (status, v) = assume(&carol);
    assert_eq!((status, v["__type"].as_str()), (400, Some("AccessDenied")), "trusted but not allowed: {v}");
    // GetRole shows the trust policy; UpdateAssumeRolePolicy replaces it.
    let role = broker.api(&["iam", "get-role", "--role-name", "ops"]);
    assert!(role["Role"]["AssumeRolePolicyDocument"].as_str().unwrap().contains("user/carol"), "{role}");
    let everyone = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": account.clone()}, "Action": "sts:AssumeRole"}]});
    broker.api(&[
        "iam",
        "update-assume-role-policy",
        "--role-name",
        "ops",
        "--policy-document",
        &everyone.to_string(),
    ]);
    assert_eq!(assume(&bob).0, 200, "the account is trusted now");
    // A role without a trust policy trusts the account: callers' own policies decide.
    broker.api(&["iam", "create-role", "--role-name", "open"]);
    let (status, v) = call(
        &broker,
        &bob,
        "AirlockSTS.AssumeRole",
        &json!({"RoleArn": format!("arn:airlock:iam::{account}:role/open"), "RoleSessionName": "s2"}),
    );
    assert_eq!(status, 200, "{v}");
    // A bad trust policy is refused by name.
    let out = broker
        .cli()
        .args([
            "iam",
            "create-role",
            "--role-name",
            "bad",
            "--assume-role-policy-document",
            r#"{"Statement":[{"Effect":"Allow","Action":"sts:AssumeRole"}]}"#,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MalformedPolicyDocument"), "{out:?}");
}

#[test]
fn managed_policies_attach_and_detach() {
    let broker = Broker::start();
    let account = account(&broker);
    let doc = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ssm:DescribeSessions","Resource":"*"}]}"#;
    broker.api(&["iam", "create-policy", "--policy-name", "reader", "--policy-document", doc]);
    let reader = user(&broker, "reader", None);
    let arn = format!("arn:airlock:iam::{account}:policy/reader");
    let describe = || call(&broker, &reader, "AmazonSSM.DescribeSessions", &json!({"State": "Active"})).0;
    assert_eq!(describe(), 400, "no policy yet");
    broker.api(&["iam", "attach-user-policy", "--user-name", "reader", "--policy-arn", &arn]);
    let v = broker.api(&["iam", "list-attached-user-policies", "--user-name", "reader"]);
    assert_eq!(v["AttachedPolicies"][0]["PolicyArn"], arn.as_str(), "{v}");
    assert_eq!(describe(), 200, "the attached policy allows it");
    broker.api(&["iam", "detach-user-policy", "--user-name", "reader", "--policy-arn", &arn]);
    assert_eq!(describe(), 400, "detached again");
    let out = broker
        .cli()
        .args(["iam", "detach-user-policy", "--user-name", "reader", "--policy-arn", &arn])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("NoSuchEntity"), "{out:?}");
}
