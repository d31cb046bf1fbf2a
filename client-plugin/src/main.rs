//! `airlock`: the user's client of the Airlock broker, shaped like `aws ssm …`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use airlock_cli::audit_cmd::AuditCommand;
use airlock_cli::command_cmd::{self, ListCommandsArgs, SendCommandArgs};
use airlock_cli::iam_cmd::IamCommand;
use airlock_cli::params::{self, Parameters};
use airlock_cli::ports::{self, Forward};
use airlock_cli::recordings_cmd::{Job, RecordingsCommand};
use airlock_cli::start::{self, StartSessionRequest};
use airlock_cli::sts_cmd::StsCommand;
use airlock_cli::{ApiCall, Client, ConfigInput, Error, Service, Settings, EXIT_FAILURE};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

/// Secure sessions to managed instances through an Airlock broker, and its users, roles and
/// policies.
#[derive(Debug, Parser)]
#[command(name = "airlock", version, about, propagate_version = true)]
struct Cli {
    /// Broker API endpoint (https://host:port, or http://127.0.0.1:port for a local broker).
    #[arg(long, global = true, env = "AIRLOCK_ENDPOINT", value_name = "URL")]
    endpoint_url: Option<String>,
    /// PEM file with the broker's CA certificate (required for https endpoints).
    #[arg(long, global = true, env = "AIRLOCK_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Signing region (default: AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1).
    #[arg(long, global = true, value_name = "REGION")]
    region: Option<String>,
    /// Named profile from ~/.aws/credentials and ~/.aws/config.
    #[arg(long, global = true, value_name = "PROFILE")]
    profile: Option<String>,
    /// Log debug details to stderr.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a shell, run a command, forward ports or carry ssh (ProxyCommand) to an instance.
    StartSession(StartSessionArgs),
    /// End a session.
    TerminateSession {
        /// The session to end.
        #[arg(long, value_name = "ID")]
        session_id: String,
    },
    /// List active or past sessions.
    DescribeSessions(DescribeSessionsArgs),
    /// List managed instances.
    DescribeInstanceInformation(DescribeInstancesArgs),
    /// Create an activation code for registering instances.
    CreateActivation(CreateActivationArgs),
    /// List activations (their codes are shown only at creation).
    DescribeActivations,
    /// Delete an activation; instances it registered stay registered.
    DeleteActivation {
        /// The activation's id.
        #[arg(long, value_name = "ID")]
        activation_id: String,
    },
    /// Deregister a managed instance: its agent is disconnected and can no longer connect.
    DeregisterManagedInstance {
        /// The managed instance (mi-…).
        #[arg(long, value_name = "ID")]
        instance_id: String,
    },
    /// Whether an instance's agent is connected.
    GetConnectionStatus {
        /// The managed instance (mi-…).
        #[arg(long, value_name = "TARGET")]
        target: String,
    },
    /// Users, roles, access keys, policies, simulation and the audit log (like `aws iam`).
    #[command(subcommand)]
    Iam(IamCommand),
    /// Temporary credentials for a role (like `aws sts`).
    #[command(subcommand)]
    Sts(StsCommand),
    /// Recorded sessions: list, print, replay, search and export them.
    #[command(subcommand)]
    Recordings(RecordingsCommand),
    /// The audit log's integrity.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run a command on instances by id or by tag (Run Command), with rate control.
    #[command(name = "send-command")]
    Send(SendCommandArgs),
    /// List commands, newest first.
    ListCommands(ListCommandsArgs),
    /// List command invocations (one per instance); --details adds output and exit codes.
    ListCommandInvocations {
        #[command(flatten)]
        list: ListCommandsArgs,
        /// Include each invocation's plugin output and exit code.
        #[arg(long)]
        details: bool,
    },
    /// One invocation's status, exit code and output.
    GetCommandInvocation {
        /// The command.
        #[arg(long, value_name = "ID")]
        command_id: String,
        /// The managed instance (mi-…).
        #[arg(long, value_name = "ID")]
        instance_id: String,
        /// The plugin (aws:runShellScript).
        #[arg(long)]
        plugin_name: Option<String>,
    },
    /// Cancel a command on all its targets, or on some.
    #[command(name = "cancel-command")]
    Cancel {
        /// The command.
        #[arg(long, value_name = "ID")]
        command_id: String,
        /// Only on these instances.
        #[arg(long, num_args = 1.., value_name = "ID")]
        instance_ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct StartSessionArgs {
    /// The managed instance (mi-…).
    #[arg(long)]
    target: String,
    /// Session document, e.g. AWS-StartNonInteractiveCommand, AWS-StartPortForwardingSession,
    /// AWS-StartPortForwardingSessionToRemoteHost or AWS-StartSSHSession.
    #[arg(long)]
    document_name: Option<String>,
    /// Document parameters: `command=uname -a`, `portNumber=5432,localPortNumber=15432`, or
    /// JSON (`{"portNumber":["5432","80"],"localPortNumber":["15432","18080"]}`).
    #[arg(long, value_parser = params::parse_parameters)]
    parameters: Option<Parameters>,
    /// Forward a local port (on 127.0.0.1; a free one when LOCAL_PORT is left out) to PORT on
    /// the target, or on HOST as the target resolves it. Repeat for several ports, e.g.
    /// `--forward 15432:5432 --forward 18080:web.internal:80`.
    #[arg(long, value_name = "[LOCAL_PORT:][HOST:]PORT", value_parser = ports::parse_forward)]
    forward: Vec<Forward>,
    /// Why the session is started (recorded by the broker).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, Args)]
struct PageArgs {
    /// Maximum items per page.
    #[arg(long, value_name = "N")]
    max_results: Option<i64>,
    /// Token from a previous page's NextToken.
    #[arg(long, value_name = "TOKEN")]
    next_token: Option<String>,
}

#[derive(Debug, Args)]
struct DescribeSessionsArgs {
    /// Active sessions or History (ended ones).
    #[arg(long, value_parser = ["Active", "History"])]
    state: String,
    /// Filters: `key=Target,value=mi-…` (several allowed), or JSON.
    #[arg(long, num_args = 1.., value_parser = params::parse_session_filter)]
    filters: Vec<Vec<Value>>,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args)]
struct DescribeInstancesArgs {
    /// Filters: `Key=PingStatus,Values=Online,ConnectionLost` (several allowed), or JSON.
    #[arg(long, num_args = 1.., value_parser = params::parse_instance_filter)]
    filters: Vec<Vec<Value>>,
    /// Filters: `key=InstanceIds,valueSet=mi-…,mi-…` (several allowed), or JSON.
    #[arg(long, num_args = 1.., value_parser = params::parse_instance_information_filter)]
    instance_information_filter_list: Vec<Vec<Value>>,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Debug, Args)]
struct CreateActivationArgs {
    /// Role the registered instances assume (recorded by the broker).
    #[arg(long)]
    iam_role: String,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
    /// Name given to the registered instances.
    #[arg(long)]
    default_instance_name: Option<String>,
    /// How many instances may register with this activation.
    #[arg(long, value_name = "N")]
    registration_limit: Option<i64>,
    /// When the activation expires: RFC 3339 or epoch seconds.
    #[arg(long, value_name = "TIME", value_parser = params::parse_timestamp)]
    expiration_date: Option<Value>,
}

fn main() {
    let cli = Cli::parse();
    let code = run(cli);
    // Flush before exiting: `exit` skips destructors, and the stdin thread may be blocked.
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn run(cli: Cli) -> i32 {
    if cli.debug {
        init_logging();
    }
    // Command-line mistakes are reported before credentials or the network are looked at.
    let task = match Task::from_command(cli.command) {
        Ok(t) => t,
        Err(e) => return report(&e),
    };
    airlock_proto::quic::install_crypto_provider();
    let input = ConfigInput {
        endpoint_url: cli.endpoint_url.clone(),
        ca_file: cli.ca_file.clone(),
        region: cli.region.clone(),
        profile: cli.profile.clone(),
    };
    // Blocking file reads, done before the runtime exists.
    let settings = match Settings::resolve(&input) {
        Ok(s) => s,
        Err(e) => return report(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(task, settings));
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(Done::Exit(code)) => code,
        Ok(Done::Show(call, response)) => {
            match call.write_response(&response, &mut std::io::stdout().lock()) {
                Ok(code) => code,
                Err(e) => report(&e),
            }
        }
        Err(e) => match e.downcast_ref::<Error>() {
            Some(e) => report(e),
            None => {
                eprintln!("{e:#}");
                EXIT_FAILURE
            }
        },
    }
}

fn report(e: &Error) -> i32 {
    eprintln!("{e}");
    e.exit_code()
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("airlock_cli=debug,airlock_proto=debug,quinn=info")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A checked command line.
enum Task {
    /// `start-session`, its document and parameters settled.
    Start(StartSessionRequest),
    /// Any other command: one API call.
    Call(ApiCall),
    /// `recordings …` and `audit …`: their own calls and output.
    Job(Job),
    /// `send-command --wait`: the request, then progress until the command is done.
    SendAndWait(Value),
}

impl Task {
    fn from_command(command: Command) -> Result<Self, Error> {
        let (op, body) = match command {
            Command::StartSession(a) => {
                let (mut document_name, mut parameters) = (a.document_name, a.parameters);
                let kind =
                    ports::prepare(&mut document_name, &mut parameters, &a.forward).map_err(Error::Usage)?;
                return Ok(Task::Start(StartSessionRequest {
                    target: a.target,
                    document_name,
                    parameters,
                    reason: a.reason,
                    kind,
                }));
            }
            Command::TerminateSession { session_id } => {
                ("TerminateSession", json!({ "SessionId": session_id }))
            }
            Command::DescribeSessions(a) => {
                let mut body = Map::new();
                body.insert("State".into(), json!(a.state));
                insert_list(&mut body, "Filters", a.filters);
                insert_page(&mut body, a.page);
                ("DescribeSessions", Value::Object(body))
            }
            Command::DescribeInstanceInformation(a) => {
                let mut body = Map::new();
                insert_list(&mut body, "Filters", a.filters);
                insert_list(&mut body, "InstanceInformationFilterList", a.instance_information_filter_list);
                insert_page(&mut body, a.page);
                ("DescribeInstanceInformation", Value::Object(body))
            }
            Command::CreateActivation(a) => {
                let mut body = Map::new();
                body.insert("IamRole".into(), json!(a.iam_role));
                insert_opt(&mut body, "Description", a.description.map(Value::from));
                insert_opt(&mut body, "DefaultInstanceName", a.default_instance_name.map(Value::from));
                insert_opt(&mut body, "RegistrationLimit", a.registration_limit.map(Value::from));
                insert_opt(&mut body, "ExpirationDate", a.expiration_date);
                ("CreateActivation", Value::Object(body))
            }
            Command::DescribeActivations => ("DescribeActivations", json!({})),
            Command::DeleteActivation { activation_id } => {
                ("DeleteActivation", json!({ "ActivationId": activation_id }))
            }
            Command::GetConnectionStatus { target } => ("GetConnectionStatus", json!({ "Target": target })),
            Command::DeregisterManagedInstance { instance_id } => {
                ("DeregisterManagedInstance", json!({ "InstanceId": instance_id }))
            }
            Command::Iam(c) => return Ok(Task::Call(c.into_call())),
            Command::Sts(c) => return Ok(Task::Call(c.into_call())),
            Command::Recordings(c) => return Ok(Task::Job(Job::Recordings(c))),
            Command::Audit(c) => return Ok(Task::Job(Job::Audit(c))),
            Command::Send(a) if a.wait => return Ok(Task::SendAndWait(a.body())),
            Command::Send(a) => ("SendCommand", a.body()),
            Command::ListCommands(a) => return Ok(Task::Call(a.call("ListCommands", false))),
            Command::ListCommandInvocations { list, details } => {
                return Ok(Task::Call(list.call("ListCommandInvocations", details)))
            }
            Command::GetCommandInvocation { command_id, instance_id, plugin_name } => {
                let mut body = json!({ "CommandId": command_id, "InstanceId": instance_id });
                if let Some(p) = plugin_name {
                    body["PluginName"] = json!(p);
                }
                ("GetCommandInvocation", body)
            }
            Command::Cancel { command_id, instance_ids } => {
                let mut body = json!({ "CommandId": command_id });
                if !instance_ids.is_empty() {
                    body["InstanceIds"] = json!(instance_ids);
                }
                ("CancelCommand", body)
            }
        };
        Ok(Task::Call(ApiCall::new(Service::Ssm, op, body)))
    }
}

/// What is left to do once the async part is over.
enum Done {
    /// Exit with this status.
    Exit(i32),
    /// Show the response to this call, then exit with the status that gives.
    Show(ApiCall, Value),
}

async fn dispatch(task: Task, settings: Settings) -> anyhow::Result<Done> {
    let client = Client::new(
        settings.endpoint.clone(),
        settings.ca_pem.as_deref(),
        settings.region.clone(),
        settings.credentials,
    )?;
    match task {
        Task::Start(request) => {
            let code = start::start_session(&client, settings.ca_pem.as_deref(), &request).await?;
            Ok(Done::Exit(code))
        }
        Task::Call(call) => {
            let response = client.call_target(&call.target(), &call.body).await.map_err(Error::from)?;
            Ok(Done::Show(call, response))
        }
        Task::Job(job) => Ok(Done::Exit(job.run(&client).await?)),
        Task::SendAndWait(body) => {
            let code = command_cmd::send_and_wait(&client, &body, &mut std::io::stdout()).await?;
            Ok(Done::Exit(code))
        }
    }
}

fn insert_opt(body: &mut Map<String, Value>, name: &str, value: Option<Value>) {
    if let Some(v) = value {
        body.insert(name.to_owned(), v);
    }
}

fn insert_list(body: &mut Map<String, Value>, name: &str, groups: Vec<Vec<Value>>) {
    let items: Vec<Value> = groups.into_iter().flatten().collect();
    if !items.is_empty() {
        body.insert(name.to_owned(), Value::Array(items));
    }
}

fn insert_page(body: &mut Map<String, Value>, page: PageArgs) {
    insert_opt(body, "MaxResults", page.max_results.map(Value::from));
    insert_opt(body, "NextToken", page.next_token.map(Value::from));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let cli = Cli::try_parse_from([
            "airlock",
            "--endpoint-url",
            "http://127.0.0.1:8080",
            "start-session",
            "--target",
            "mi-0123456789abcdef0",
            "--document-name",
            "AWS-StartNonInteractiveCommand",
            "--parameters",
            "command=uname -a",
        ])
        .unwrap();
        let Command::StartSession(a) = cli.command else { panic!("wrong command") };
        assert_eq!(a.parameters.unwrap()["command"], vec!["uname -a"]);

        let cli = Cli::try_parse_from([
            "airlock",
            "describe-sessions",
            "--state",
            "History",
            "--filters",
            "key=Target,value=mi-1",
            "key=Owner,value=alice",
            "--max-results",
            "5",
            "--region",
            "eu-west-1",
        ])
        .unwrap();
        assert_eq!(cli.region.as_deref(), Some("eu-west-1"), "global options work after the command");
        let Command::DescribeSessions(a) = cli.command else { panic!("wrong command") };
        assert_eq!(a.filters.concat().len(), 2);
        assert_eq!(a.page.max_results, Some(5));
    }

    fn start_task(args: &[&str]) -> Result<StartSessionRequest, Error> {
        let mut argv = vec!["airlock", "start-session", "--target", "mi-0123456789abcdef0"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        match Task::from_command(cli.command)? {
            Task::Start(request) => Ok(request),
            Task::Call(c) => panic!("expected start-session, got {}", c.operation),
            Task::Job(j) => panic!("expected start-session, got {j:?}"),
            Task::SendAndWait(b) => panic!("expected start-session, got {b}"),
        }
    }

    #[test]
    fn forward_flags_make_a_port_session() {
        let r = start_task(&["--forward", "15432:5432", "--forward", "18080:web.internal:80"]).unwrap();
        assert_eq!(
            r.body(),
            json!({
                "Target": "mi-0123456789abcdef0",
                "DocumentName": "AWS-StartPortForwardingSessionToRemoteHost",
                "Parameters": {
                    "portNumber": ["5432", "80"],
                    "localPortNumber": ["15432", "18080"],
                    "host": ["localhost", "web.internal"]
                }
            })
        );
        assert!(matches!(r.kind, ports::SessionKind::Forward(ref t) if t.len() == 2));

        let r = start_task(&["--forward", "5432"]).unwrap();
        assert_eq!(r.document_name.as_deref(), Some("AWS-StartPortForwardingSession"));

        let r = start_task(&[
            "--document-name",
            "AWS-StartPortForwardingSession",
            "--parameters",
            r#"{"portNumber":["5432","80"],"localPortNumber":["15432","18080"]}"#,
        ])
        .unwrap();
        let ports::SessionKind::Forward(t) = r.kind else { panic!("expected forwarding") };
        assert_eq!(t.iter().map(|t| t.local_port).collect::<Vec<_>>(), [15432, 18080]);

        let r = start_task(&["--document-name", "AWS-StartSSHSession", "--parameters", "portNumber=2222"])
            .unwrap();
        assert_eq!(r.kind, ports::SessionKind::Stdio { port: 2222 });
    }

    #[test]
    fn forward_usage_errors_exit_2() {
        for args in [
            vec!["--forward", "0"],
            vec!["--forward", "99999:80"],
            vec!["--forward", "1:bad host:80"],
            vec!["--forward", "5432", "--parameters", "portNumber=80"],
            vec!["--forward", "5432", "--document-name", "AWS-StartSSHSession"],
            vec![
                "--document-name",
                "AWS-StartPortForwardingSessionToRemoteHost",
                "--parameters",
                "portNumber=80",
            ],
            vec!["--document-name", "AWS-StartPortForwardingSession", "--parameters", "portNumber=http"],
        ] {
            let err = start_task(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    fn call_task(args: &[&str]) -> ApiCall {
        let argv = std::iter::once("airlock").chain(args.iter().copied());
        match Task::from_command(Cli::try_parse_from(argv).unwrap().command).unwrap() {
            Task::Call(call) => call,
            Task::Start(_) | Task::Job(_) | Task::SendAndWait(_) => panic!("expected an API call"),
        }
    }

    #[test]
    fn run_command_flags_make_ssm_requests() {
        let c = call_task(&[
            "send-command",
            "--document-name",
            "AWS-RunShellScript",
            "--targets",
            "Key=tag:Environment,Values=Production",
            "--parameters",
            r#"{"commands":["uptime","df -h"]}"#,
            "--timeout-seconds",
            "600",
            "--max-concurrency",
            "50%",
            "--max-errors",
            "0",
        ]);
        assert_eq!(
            (c.target(), c.body),
            (
                "AmazonSSM.SendCommand".to_owned(),
                json!({"DocumentName": "AWS-RunShellScript",
                    "Targets": [{"Key": "tag:Environment", "Values": ["Production"]}],
                    "Parameters": {"commands": ["uptime", "df -h"]}, "TimeoutSeconds": 600,
                    "MaxConcurrency": "50%", "MaxErrors": "0"})
            )
        );
        let c = call_task(&["list-command-invocations", "--command-id", "c", "--details"]);
        assert_eq!(c.body, json!({"CommandId": "c", "Details": true}));
        let c = call_task(&["cancel-command", "--command-id", "c", "--instance-ids", "mi-1", "mi-2"]);
        assert_eq!(c.body, json!({"CommandId": "c", "InstanceIds": ["mi-1", "mi-2"]}));
        let c = call_task(&["get-command-invocation", "--command-id", "c", "--instance-id", "mi-1"]);
        assert_eq!(c.target(), "AmazonSSM.GetCommandInvocation");
    }

    #[test]
    fn commands_pick_their_target() {
        let c = call_task(&["get-connection-status", "--target", "mi-1"]);
        assert_eq!(
            (c.target(), c.body),
            ("AmazonSSM.GetConnectionStatus".to_owned(), json!({"Target": "mi-1"}))
        );
        let c = call_task(&["delete-activation", "--activation-id", "a-1"]);
        assert_eq!(
            (c.target(), c.body),
            ("AmazonSSM.DeleteActivation".to_owned(), json!({"ActivationId": "a-1"}))
        );
        let c = call_task(&["deregister-managed-instance", "--instance-id", "mi-1"]);
        assert_eq!(
            (c.target(), c.body),
            ("AmazonSSM.DeregisterManagedInstance".to_owned(), json!({"InstanceId": "mi-1"}))
        );
        assert_eq!(call_task(&["describe-activations"]).target(), "AmazonSSM.DescribeActivations");
        let c = call_task(&["iam", "create-user", "--user-name", "bob", "--tags", "Key=team,Value=ops"]);
        assert_eq!(c.target(), "AirlockIAM.CreateUser");
        assert_eq!(c.body, json!({"UserName": "bob", "Tags": [{"Key": "team", "Value": "ops"}]}));
        let c = call_task(&["sts", "assume-role", "--role-arn", "R", "--role-session-name", "s", "--export"]);
        assert_eq!(c.target(), "AirlockSTS.AssumeRole");
        assert_eq!(c.output, airlock_cli::call::Output::Exports);
        let c = call_task(&["iam", "list-users", "--region", "eu-west-1"]);
        assert_eq!(c.target(), "AirlockIAM.ListUsers");
    }

    #[test]
    fn usage_errors() {
        let bad = [
            vec!["airlock", "describe-sessions", "--state", "Sideways"],
            vec!["airlock", "start-session"],
            vec!["airlock", "start-session", "--target", "mi-1", "--parameters", "{bad json"],
            vec!["airlock", "create-activation", "--iam-role", "r", "--expiration-date", "soon"],
            vec!["airlock", "frobnicate"],
            vec!["airlock", "iam"],
            vec!["airlock", "iam", "create-user"],
            vec!["airlock", "sts", "assume-role", "--role-arn", "R"],
            vec!["airlock", "recordings"],
            vec!["airlock", "recordings", "cat", "../x"],
            vec!["airlock", "audit"],
        ];
        for args in bad {
            let err = Cli::try_parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
