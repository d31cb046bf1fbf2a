"""SSM error codes exactly as botocore and the AWS CLI report them."""

import pytest

from conftest import code_of, error_of, message_of


def assert_code(e, code):
    assert code_of(e) == code, e.response
    meta = e.response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 400, meta
    assert meta.get("RequestId"), meta
    assert message_of(e), e.response


def assert_cli_code(r, code, operation):
    assert r.code != 0, r.stdout
    assert f"An error occurred ({code}) when calling the {operation} operation" in r.stderr, r.stderr


# SSM's model names InvalidFilterKey; a service that checks the enum first says ValidationException.
BAD_FILTER_CODES = ("InvalidFilterKey", "ValidationException")


def assert_bad_filter(e):
    assert code_of(e) in BAD_FILTER_CODES, e.response
    assert_code(e, code_of(e))
    assert "Bogus" in message_of(e), message_of(e)


def test_unknown_instance_is_target_not_connected(broker, admin):
    e = error_of(admin.start_session, Target="mi-0123456789abcdef0")
    assert_code(e, "TargetNotConnected")
    assert "mi-0123456789abcdef0" in message_of(e)
    r = broker.aws(["ssm", "start-session", "--target", "mi-0123456789abcdef0"])
    assert_cli_code(r, "TargetNotConnected", "StartSession")


def test_registered_but_offline_instance_is_target_not_connected(broker, admin):
    _, mi = broker.register("offline")
    assert_code(error_of(admin.start_session, Target=mi), "TargetNotConnected")
    assert admin.get_connection_status(Target=mi)["Status"] == "notconnected"


def test_unknown_document_is_invalid_document(broker, admin, agent):
    e = error_of(admin.start_session, Target=agent.instance_id, DocumentName="Nope-Document")
    assert_code(e, "InvalidDocument")
    assert "Nope-Document" in message_of(e)
    r = broker.aws(["ssm", "start-session", "--target", agent.instance_id, "--document-name", "Nope-Document"])
    assert_cli_code(r, "InvalidDocument", "StartSession")


def test_terminating_an_unknown_session_does_not_exist(broker, admin):
    e = error_of(admin.terminate_session, SessionId="admin-0123456789abcdef0")
    assert_code(e, "DoesNotExistException")
    r = broker.aws(["ssm", "terminate-session", "--session-id", "admin-0123456789abcdef0"])
    assert_cli_code(r, "DoesNotExistException", "TerminateSession")


def test_garbage_next_token_is_invalid_next_token(broker, admin, agent):
    assert_code(error_of(admin.describe_sessions, State="Active", NextToken="garbage"), "InvalidNextToken")
    assert_code(error_of(admin.describe_instance_information, NextToken="garbage"), "InvalidNextToken")
    # an explicit --next-token turns the CLI's own pagination off and is sent as it is
    r = broker.aws(["ssm", "describe-sessions", "--state", "History", "--next-token", "garbage"])
    assert_cli_code(r, "InvalidNextToken", "DescribeSessions")


@pytest.mark.parametrize("state", ["Active", "History"])
def test_bad_session_filter_key_is_refused_even_when_nothing_matches(bare_broker, state):
    """On a broker with no session at all: the key is checked, not just applied per session."""
    client = bare_broker.client(bare_broker.admin)
    assert_bad_filter(error_of(client.describe_sessions, State=state, Filters=[{"key": "Bogus", "value": "x"}]))


def test_bad_session_filter_key_with_the_cli(bare_broker):
    r = bare_broker.aws(["ssm", "describe-sessions", "--state", "Active", "--filters", "key=Bogus,value=x"])
    assert r.code != 0, r.stdout
    assert r.error_code() in BAD_FILTER_CODES, r.stderr
    assert "when calling the DescribeSessions operation" in r.stderr


def bad_instance_filters(client):
    assert_bad_filter(error_of(client.describe_instance_information, Filters=[{"Key": "Bogus", "Values": ["x"]}]))
    assert_bad_filter(error_of(client.describe_instance_information,
                               InstanceInformationFilterList=[{"key": "Bogus", "valueSet": ["x"]}]))


def test_bad_instance_filter_key_is_refused(admin, agent):
    bad_instance_filters(admin)


def test_bad_instance_filter_key_is_refused_even_with_no_instances(bare_broker):
    bad_instance_filters(bare_broker.client(bare_broker.admin))


def test_out_of_range_values_are_validation_errors(broker, admin, agent):
    assert_code(error_of(admin.describe_sessions, State="Bogus"), "ValidationException")
    assert_code(error_of(admin.describe_sessions, State="Active", MaxResults=201), "ValidationException")
    assert_code(error_of(admin.describe_instance_information, MaxResults=51), "ValidationException")
    r = broker.aws(["ssm", "describe-sessions", "--state", "Bogus"])
    assert_cli_code(r, "ValidationException", "DescribeSessions")
