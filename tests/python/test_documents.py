"""SSM documents: the Session Manager preferences in SSM-SessionManagerRunShell, created and
updated the way AWS documents it (`aws ssm create-document … --document-type Session`,
`aws ssm update-document … --document-version '$LATEST'`), and the AWS-owned session
documents, read-only.

The preferences lifecycle runs on the bare broker, so the shared broker's sessions never see
changing preferences; everything else uses names unique to the test.
"""

import hashlib
import json

import pytest

from conftest import REGION, SHELL_DOCUMENT, code_of, error_of, message_of

AWS_DOCUMENTS = [
    "AWS-StartInteractiveCommand",
    "AWS-StartNonInteractiveCommand",
    "AWS-StartPortForwardingSession",
    "AWS-StartPortForwardingSessionToRemoteHost",
    "AWS-StartSSHSession",
]


def prefs(**inputs) -> str:
    return json.dumps(
        {
            "schemaVersion": "1.0",
            "description": "Document to hold regional settings for Session Manager",
            "sessionType": "Standard_Stream",
            "inputs": inputs,
        },
        indent=2,
    )


def assert_code(e, code, *needles):
    assert code_of(e) == code, e.response
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    for n in needles:
        assert n in message_of(e), message_of(e)


def assert_cli_ok(r):
    assert r.code == 0, r.stderr
    return r.json


def assert_cli_code(r, code, operation):
    assert r.code != 0, r.stdout
    assert f"An error occurred ({code}) when calling the {operation} operation" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def account(users):
    return users["alice"].account


def document_arn(account, name):
    # AWS- and SSM- names are AWS-owned in SSM's ARN form: no account.
    owned = name.startswith("AWS-") or name.startswith("SSM-")
    return f"arn:airlock:ssm:{REGION}:{'' if owned else account}:document/{name}"


def create(client, name, content, **extra):
    return client.create_document(Name=name, Content=content, DocumentType="Session", **extra)


# --- the preferences document with the AWS CLI ----------------------------------------------------


def test_preferences_lifecycle_with_the_cli(bare_broker, workdir):
    """create-document, update-document --document-version '$LATEST', get/describe/list/delete."""
    folder = workdir / "documents"
    folder.mkdir(exist_ok=True)
    v1, v2 = folder / "prefs-v1.json", folder / "prefs-v2.json"
    v1.write_text(prefs(idleSessionTimeout="20", s3BucketName="", cloudWatchLogGroupName="", runAsEnabled=False))
    v2.write_text(
        prefs(idleSessionTimeout="15", maxSessionDuration="60", shellProfile={"linux": "cd /tmp", "windows": ""})
    )
    aws = bare_broker.aws
    try:
        d = assert_cli_ok(aws(["ssm", "create-document", "--name", SHELL_DOCUMENT, "--document-type", "Session",
                               "--content", f"file://{v1}"]))["DocumentDescription"]
        assert (d["Name"], d["Status"], d["DocumentType"], d["DocumentFormat"]) == (
            SHELL_DOCUMENT, "Active", "Session", "JSON"), d
        assert (d["DocumentVersion"], d["LatestVersion"], d["DefaultVersion"]) == ("1", "1", "1"), d
        assert d["HashType"] == "Sha256" and d["Hash"] == hashlib.sha256(v1.read_bytes()).hexdigest(), d
        assert d["SchemaVersion"] == "1.0" and d["PlatformTypes"] == ["Linux", "MacOS"], d

        r = aws(["ssm", "create-document", "--name", SHELL_DOCUMENT, "--document-type", "Session",
                 "--content", f"file://{v1}"])
        assert_cli_code(r, "DocumentAlreadyExists", "CreateDocument")

        d = assert_cli_ok(aws(["ssm", "update-document", "--name", SHELL_DOCUMENT, "--content", f"file://{v2}",
                               "--document-version", "$LATEST"]))["DocumentDescription"]
        assert (d["DocumentVersion"], d["LatestVersion"], d["DefaultVersion"]) == ("2", "2", "2"), d

        g = assert_cli_ok(aws(["ssm", "get-document", "--name", SHELL_DOCUMENT]))
        assert (g["Content"], g["DocumentVersion"], g["Status"]) == (v2.read_text(), "2", "Active"), g
        g = assert_cli_ok(aws(["ssm", "get-document", "--name", SHELL_DOCUMENT, "--document-version", "1"]))
        assert g["Content"] == v1.read_text(), g

        d = assert_cli_ok(aws(["ssm", "describe-document", "--name", SHELL_DOCUMENT]))["Document"]
        assert (d["DocumentVersion"], d["LatestVersion"], d["DefaultVersion"]) == ("2", "2", "2"), d
        assert d["Description"] == "Document to hold regional settings for Session Manager", d

        listed = assert_cli_ok(aws(["ssm", "list-documents"]))["DocumentIdentifiers"]
        by_name = {i["Name"]: i for i in listed}
        assert by_name[SHELL_DOCUMENT]["DocumentVersion"] == "2", listed
        for name in AWS_DOCUMENTS:
            assert by_name[name]["Owner"] == "Amazon", listed
        own = assert_cli_ok(aws(["ssm", "list-documents", "--filters", "Key=Owner,Values=Self"]))
        assert [i["Name"] for i in own["DocumentIdentifiers"]] == [SHELL_DOCUMENT], own

        r = aws(["ssm", "update-document", "--name", SHELL_DOCUMENT, "--content", f"file://{v2}",
                 "--document-version", "$LATEST"])
        assert_cli_code(r, "DuplicateDocumentContent", "UpdateDocument")

        assert_cli_ok(aws(["ssm", "delete-document", "--name", SHELL_DOCUMENT]))
        assert_cli_code(aws(["ssm", "get-document", "--name", SHELL_DOCUMENT]), "InvalidDocument", "GetDocument")
    finally:
        aws(["ssm", "delete-document", "--name", SHELL_DOCUMENT])


# --- refusals, with boto3 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, code, needles",
    [
        (prefs(idleSessionTimeout="20", colour="red"), "InvalidDocumentContent", ["unknown members: colour"]),
        (prefs(idleSessionTimeout="0"), "InvalidDocumentContent", ["inputs.idleSessionTimeout", "1 to 60"]),
        (prefs(idleSessionTimeout="61"), "InvalidDocumentContent", ["inputs.idleSessionTimeout", "1 to 60"]),
        (prefs(maxSessionDuration="1441"), "InvalidDocumentContent", ["inputs.maxSessionDuration"]),
        (prefs(s3BucketName="Not_A_Bucket"), "InvalidDocumentContent", ["inputs.s3BucketName"]),
        (prefs(runAsEnabled=True, runAsDefaultUser="bad user"), "InvalidDocumentContent",
         ["inputs.runAsDefaultUser"]),
        (prefs(s3EncryptionEnabled="maybe"), "InvalidDocumentContent", ["inputs.s3EncryptionEnabled"]),
        (json.dumps({"schemaVersion": "2.0", "sessionType": "Standard_Stream"}), "InvalidDocumentSchemaVersion",
         ["schemaVersion", "2.0"]),
        ("schemaVersion: '1.0'\nsessionType: Standard_Stream\n", "InvalidDocumentContent",
         ["YAML documents are not supported; send JSON"]),
        ('{"schemaVersion": "1.0", ', "InvalidDocumentContent", ["not valid JSON"]),
        (prefs(shellProfile={"linux": "x" * 70_000}), "MaxDocumentSizeExceeded", ["65536"]),
    ],
    ids=["unknown-input", "idle-0", "idle-61", "max-1441", "bucket", "run-as-user", "bool", "schema-2.0",
         "yaml-content", "broken-json", "too-large"],
)
def test_bad_content_is_refused_naming_the_field(admin, unique, content, code, needles):
    name = f"Prefs-{unique}"
    assert_code(error_of(create, admin, name, content), code, *needles)
    assert_code(error_of(admin.get_document, Name=name), "InvalidDocument", name)


def test_formats_and_types_other_than_json_session_are_refused(admin, unique):
    name = f"Prefs-{unique}"
    e = error_of(create, admin, name, prefs(), DocumentFormat="YAML")
    assert_code(e, "InvalidDocumentContent", "YAML documents are not supported; send JSON")
    # Command (also SSM's default type) documents are Run Command's schema 2.2.
    e = error_of(admin.create_document, Name=name, Content=prefs(), DocumentType="Command")
    assert_code(e, "InvalidDocumentSchemaVersion", "2.2")
    e = error_of(admin.create_document, Name=name, Content=prefs())
    assert_code(e, "InvalidDocumentSchemaVersion", "2.2")
    e = error_of(admin.create_document, Name=name, Content=prefs(), DocumentType="Automation")
    assert_code(e, "InvalidDocumentType", "Session")
    port = json.dumps({"schemaVersion": "1.0", "sessionType": "Port", "properties": {"portNumber": "22"}})
    e = error_of(create, admin, SHELL_DOCUMENT, port)
    assert_code(e, "InvalidDocumentContent", "Standard_Stream")


def test_versions_duplicates_and_unknown_documents(admin, account, unique):
    name = f"Prefs-{unique}"
    d = create(admin, name, prefs(idleSessionTimeout=10), Tags=[{"Key": "team", "Value": unique}])
    d = d["DocumentDescription"]
    assert (d["Owner"], d["LatestVersion"]) == (account, "1"), d
    assert d["Tags"] == [{"Key": "team", "Value": unique}], d
    admin.update_document(Name=name, Content=prefs(idleSessionTimeout="11"), DocumentVersion="$LATEST")
    admin.update_document(Name=name, Content=prefs(idleSessionTimeout="12"), DocumentVersion="2")
    d = admin.describe_document(Name=name)["Document"]
    assert (d["DocumentVersion"], d["LatestVersion"], d["DefaultVersion"]) == ("3", "3", "3"), d
    assert admin.describe_document(Name=name, DocumentVersion="1")["Document"]["LatestVersion"] == "3"
    assert json.loads(admin.get_document(Name=name, DocumentVersion="2")["Content"])["inputs"] == {
        "idleSessionTimeout": "11"}

    e = error_of(admin.update_document, Name=name, Content=prefs(idleSessionTimeout="12"), DocumentVersion="$LATEST")
    assert_code(e, "DuplicateDocumentContent")
    for version in ["1", "2", "4", "$DEFAULT"]:
        e = error_of(admin.update_document, Name=name, Content=prefs(idleSessionTimeout="13"), DocumentVersion=version)
        assert_code(e, "InvalidDocumentVersion")
    assert_code(error_of(admin.get_document, Name=name, DocumentVersion="9"), "InvalidDocumentVersion")
    assert_code(error_of(admin.update_document, Name=f"Nope-{unique}", Content=prefs()), "InvalidDocument")
    assert_code(error_of(admin.delete_document, Name=f"Nope-{unique}"), "InvalidDocument")
    admin.delete_document(Name=name)
    assert_code(error_of(admin.describe_document, Name=name), "InvalidDocument")


def test_aws_documents_are_listed_and_read_only(broker, admin):
    names = []
    for page in admin.get_paginator("list_documents").paginate(
        Filters=[{"Key": "Owner", "Values": ["Amazon"]}], PaginationConfig={"PageSize": 3}
    ):
        names += [i["Name"] for i in page["DocumentIdentifiers"]]
    assert names == AWS_DOCUMENTS, names
    ssh = json.loads(admin.get_document(Name="AWS-StartSSHSession")["Content"])
    assert ssh["sessionType"] == "Port" and ssh["parameters"]["portNumber"]["default"] == "22", ssh
    remote = json.loads(admin.get_document(Name="AWS-StartPortForwardingSessionToRemoteHost")["Content"])
    assert remote["properties"]["type"] == "LocalPortForwarding" and "host" in remote["parameters"], remote
    d = admin.describe_document(Name="AWS-StartPortForwardingSession")["Document"]
    assert d["Owner"] == "Amazon" and {p["Name"] for p in d["Parameters"]} == {"portNumber", "localPortNumber"}, d
    for name in AWS_DOCUMENTS:
        assert_code(error_of(admin.update_document, Name=name, Content=prefs()), "InvalidDocumentOperation", "read-only")
        assert_code(error_of(admin.delete_document, Name=name), "InvalidDocumentOperation", "read-only")
        assert_code(error_of(create, admin, name, prefs()), "InvalidDocumentOperation")
    r = broker.aws(["ssm", "delete-document", "--name", "AWS-StartSSHSession"])
    assert_cli_code(r, "InvalidDocumentOperation", "DeleteDocument")


# --- policy --------------------------------------------------------------------------------------------


def test_a_user_without_document_permissions_is_denied(broker, admin, users, account, unique):
    name = f"Prefs-{unique}"
    create(admin, name, prefs())
    try:
        for who in ("mallory", "dave"):
            user = users[who]
            client = broker.client(user.creds)
            arn = document_arn(account, name)
            for call, kwargs, action, resource in [
                (create, {"client": client, "name": f"Other-{unique}", "content": prefs()}, "ssm:CreateDocument",
                 document_arn(account, f"Other-{unique}")),
                (client.update_document, {"Name": name, "Content": prefs(kmsKeyId="k")}, "ssm:UpdateDocument", arn),
                (client.get_document, {"Name": name}, "ssm:GetDocument", arn),
                (client.describe_document, {"Name": name}, "ssm:DescribeDocument", arn),
                (client.delete_document, {"Name": name}, "ssm:DeleteDocument", arn),
                (client.list_documents, {}, "ssm:ListDocuments", "*"),
                (client.get_document, {"Name": SHELL_DOCUMENT}, "ssm:GetDocument",
                 document_arn(account, SHELL_DOCUMENT)),
            ]:
                e = error_of(call, **kwargs)
                assert_code(e, "AccessDeniedException", f"User: {user.arn} is not authorized to perform: {action} "
                                                        f"on resource: {resource} ")
        r = broker.aws(["ssm", "get-document", "--name", name], creds=users["mallory"].creds)
        assert_cli_code(r, "AccessDeniedException", "GetDocument")
        assert admin.describe_document(Name=name)["Document"]["LatestVersion"] == "1"
        events = broker.iam("ListAuditEvents", {"MaxResults": 100})["Events"]
        denied = [e for e in events if e["Principal"] == users["mallory"].arn and e["Action"] == "ssm:DeleteDocument"]
        assert denied and denied[0]["Resource"] == document_arn(account, name), events[:5]
        assert not [e for e in events if e["Action"] == "ssm:GetDocument"], "reads are not audited"
    finally:
        admin.delete_document(Name=name)


def test_alice_with_ssm_star_manages_documents(broker, users, unique):
    alice = broker.client(users["alice"].creds)
    name = f"Alice-{unique}"
    create(alice, name, prefs(requireRecording=False, recordPortData="true"))
    alice.update_document(Name=name, Content=prefs(requireRecording=True), DocumentVersion="$LATEST")
    assert alice.describe_document(Name=name)["Document"]["LatestVersion"] == "2"
    alice.delete_document(Name=name)
