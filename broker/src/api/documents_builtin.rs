//! The AWS-owned session documents the broker runs, with content in SSM's form (what
//! GetDocument shows; StartSession's behaviour for them is in `sessions`).

use super::sessions::{
    COMMAND_DOCUMENT, INTERACTIVE_DOCUMENT, PORT_DOCUMENT, REMOTE_PORT_DOCUMENT, SSH_DOCUMENT,
};

/// The body of a port-number parameter's `allowedPattern` (1–65535).
macro_rules! port_pattern {
    () => {
        r"([1-9]|[1-9][0-9]{1,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}

/// The AWS-owned documents StartSession runs, by name, with content in SSM's form.
pub(super) const BUILTINS: [(&str, &str); 5] = [
    (
        INTERACTIVE_DOCUMENT,
        r#"{
  "schemaVersion": "1.0",
  "description": "Document to run a single command on a terminal, interactively",
  "sessionType": "InteractiveCommands",
  "parameters": {
    "command": {"type": "String", "description": "(Required) The command to run."}
  },
  "properties": {
    "linux": {"commands": "{{ command }}", "runAsElevated": false},
    "macos": {"commands": "{{ command }}", "runAsElevated": false}
  }
}"#,
    ),
    (
        COMMAND_DOCUMENT,
        r#"{
  "schemaVersion": "1.0",
  "description": "Document to run a single command without a terminal: stdout, stderr and the exit code are returned",
  "sessionType": "NonInteractiveCommands",
  "parameters": {
    "command": {"type": "String", "description": "(Required) The command to run."}
  },
  "properties": {
    "linux": {"commands": "{{ command }}", "runAsElevated": false, "separateOutputStream": true},
    "macos": {"commands": "{{ command }}", "runAsElevated": false, "separateOutputStream": true}
  }
}"#,
    ),
    (
        PORT_DOCUMENT,
        concat!(
            r#"{
  "schemaVersion": "1.0",
  "description": "Document to start port forwarding session over Session Manager",
  "sessionType": "Port",
  "parameters": {
    "portNumber": {"type": "String", "description": "(Optional) Port number of the server on the instance", "allowedPattern": "^"#,
            port_pattern!(),
            r#"$", "default": "80"},
    "localPortNumber": {"type": "String", "description": "(Optional) Port number on the local machine to forward traffic to. An open port is chosen at run-time if not provided", "allowedPattern": "^(0|"#,
            port_pattern!(),
            r#")$", "default": "0"}
  },
  "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}"}
}"#
        ),
    ),
    (
        REMOTE_PORT_DOCUMENT,
        concat!(
            r#"{
  "schemaVersion": "1.0",
  "description": "Document to start port forwarding session over Session Manager to a remote host",
  "sessionType": "Port",
  "parameters": {
    "host": {"type": "String", "description": "(Required) The IP address or host name of the remote host, resolved by the agent."},
    "portNumber": {"type": "String", "description": "(Optional) Port number of the remote host", "allowedPattern": "^"#,
            port_pattern!(),
            r#"$", "default": "80"},
    "localPortNumber": {"type": "String", "description": "(Optional) Port number on the local machine to forward traffic to. An open port is chosen at run-time if not provided", "allowedPattern": "^(0|"#,
            port_pattern!(),
            r#")$", "default": "0"}
  },
  "properties": {"portNumber": "{{ portNumber }}", "type": "LocalPortForwarding", "localPortNumber": "{{ localPortNumber }}", "host": "{{ host }}"}
}"#
        ),
    ),
    (
        SSH_DOCUMENT,
        concat!(
            r#"{
  "schemaVersion": "1.0",
  "description": "Document to start SSH session",
  "sessionType": "Port",
  "parameters": {
    "portNumber": {"type": "String", "description": "(Optional) Port number of SSH server on the instance", "allowedPattern": "^"#,
            port_pattern!(),
            r#"$", "default": "22"}
  },
  "properties": {"portNumber": "{{ portNumber }}"}
}"#
        ),
    ),
];
