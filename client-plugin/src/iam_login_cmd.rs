//! `airlock iam …` for console credentials: login profiles (passwords) and virtual MFA
//! devices, with the AWS CLI's command and flag names.

use clap::{ArgAction, Subcommand};
use serde_json::{json, Map, Value};

use crate::api::Service;
use crate::call::ApiCall;

/// The console-credential subcommands of `airlock iam`.
#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Give a user a console password (at least 12 characters, not the user name).
    CreateLoginProfile {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: String,
        /// The new password.
        #[arg(long, value_name = "PASSWORD")]
        password: String,
        /// Make the user choose a new password at the next sign-in.
        #[arg(long, action = ArgAction::SetTrue, overrides_with = "no_password_reset_required")]
        password_reset_required: bool,
        /// Do not require a new password (the default).
        #[arg(long, action = ArgAction::SetTrue)]
        no_password_reset_required: bool,
    },
    /// Change a user's console password or its reset demand (a new password signs it out).
    UpdateLoginProfile {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: String,
        /// The new password.
        #[arg(long, value_name = "PASSWORD")]
        password: Option<String>,
        /// Make the user choose a new password at the next sign-in.
        #[arg(long, action = ArgAction::SetTrue, overrides_with = "no_password_reset_required")]
        password_reset_required: bool,
        /// Clear that demand.
        #[arg(long, action = ArgAction::SetTrue)]
        no_password_reset_required: bool,
    },
    /// Remove a user's console password (it can no longer sign in, and is signed out).
    DeleteLoginProfile {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: String,
    },
    /// Show whether a user has a console password (never the password).
    GetLoginProfile {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: String,
    },
    /// Change your own console password.
    ChangePassword {
        /// The current password.
        #[arg(long, value_name = "PASSWORD")]
        old_password: String,
        /// The new password.
        #[arg(long, value_name = "PASSWORD")]
        new_password: String,
    },
    /// Create a virtual MFA device; prints its seed and otpauth:// URI this once.
    CreateVirtualMfaDevice {
        /// The device's name.
        #[arg(long, value_name = "NAME")]
        virtual_mfa_device_name: String,
    },
    /// Enable a virtual MFA device for a user with two consecutive codes from its app.
    EnableMfaDevice {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: String,
        /// The device's serial number (its ARN).
        #[arg(long, value_name = "ARN")]
        serial_number: String,
        /// A code from the app.
        #[arg(long = "authentication-code1", value_name = "CODE")]
        authentication_code1: String,
        /// The code the app shows next.
        #[arg(long = "authentication-code2", value_name = "CODE")]
        authentication_code2: String,
    },
    /// Stop requiring a device's codes from a user (the device remains).
    DeactivateMfaDevice {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: String,
        /// The device's serial number (its ARN).
        #[arg(long, value_name = "ARN")]
        serial_number: String,
    },
    /// List the MFA devices enabled for a user (yours without --user-name).
    ListMfaDevices {
        /// The user.
        #[arg(long, value_name = "NAME")]
        user_name: Option<String>,
    },
    /// Delete a virtual MFA device that no user has enabled.
    DeleteVirtualMfaDevice {
        /// The device's serial number (its ARN).
        #[arg(long, value_name = "ARN")]
        serial_number: String,
    },
}

/// `PasswordResetRequired` from the flag pair, absent when neither was given.
fn reset_flag(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    }
}

fn body(members: &[(&str, Option<Value>)]) -> Value {
    let map: Map<String, Value> =
        members.iter().filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v))).collect();
    Value::Object(map)
}

impl LoginCommand {
    /// The API call this command makes.
    pub fn into_call(self) -> ApiCall {
        use LoginCommand as C;
        let (operation, body) = match self {
            C::CreateLoginProfile {
                user_name,
                password,
                password_reset_required,
                no_password_reset_required,
            } => (
                "CreateLoginProfile",
                body(&[
                    ("UserName", Some(json!(user_name))),
                    ("Password", Some(json!(password))),
                    (
                        "PasswordResetRequired",
                        reset_flag(password_reset_required, no_password_reset_required).map(Value::Bool),
                    ),
                ]),
            ),
            C::UpdateLoginProfile {
                user_name,
                password,
                password_reset_required,
                no_password_reset_required,
            } => (
                "UpdateLoginProfile",
                body(&[
                    ("UserName", Some(json!(user_name))),
                    ("Password", password.map(Value::String)),
                    (
                        "PasswordResetRequired",
                        reset_flag(password_reset_required, no_password_reset_required).map(Value::Bool),
                    ),
                ]),
            ),
            C::DeleteLoginProfile { user_name } => ("DeleteLoginProfile", json!({ "UserName": user_name })),
            C::GetLoginProfile { user_name } => ("GetLoginProfile", json!({ "UserName": user_name })),
            C::ChangePassword { old_password, new_password } => {
                ("ChangePassword", json!({ "OldPassword": old_password, "NewPassword": new_password }))
            }
            C::CreateVirtualMfaDevice { virtual_mfa_device_name } => {
                ("CreateVirtualMFADevice", json!({ "VirtualMFADeviceName": virtual_mfa_device_name }))
            }
            C::EnableMfaDevice { user_name, serial_number, authentication_code1, authentication_code2 } => (
                "EnableMFADevice",
                json!({ "UserName": user_name, "SerialNumber": serial_number,
                    "AuthenticationCode1": authentication_code1, "AuthenticationCode2": authentication_code2 }),
            ),
            C::DeactivateMfaDevice { user_name, serial_number } => {
                ("DeactivateMFADevice", json!({ "UserName": user_name, "SerialNumber": serial_number }))
            }
            C::ListMfaDevices { user_name } => {
                ("ListMFADevices", body(&[("UserName", user_name.map(Value::String))]))
            }
            C::DeleteVirtualMfaDevice { serial_number } => {
                ("DeleteVirtualMFADevice", json!({ "SerialNumber": serial_number }))
            }
        };
        ApiCall::new(Service::Iam, operation, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: LoginCommand,
    }

    fn call(args: &[&str]) -> ApiCall {
        let argv = std::iter::once("iam").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.cmd.into_call()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn commands_send_iams_members() {
        let arn = "arn:airlock:iam::1:mfa/phone";
        for (args, op, body) in [
            (
                vec!["create-login-profile", "--user-name", "u", "--password", "p w"],
                "CreateLoginProfile",
                json!({"UserName": "u", "Password": "p w"}),
            ),
            (
                vec![
                    "create-login-profile",
                    "--user-name",
                    "u",
                    "--password",
                    "p",
                    "--password-reset-required",
                ],
                "CreateLoginProfile",
                json!({"UserName": "u", "Password": "p", "PasswordResetRequired": true}),
            ),
            (
                vec!["update-login-profile", "--user-name", "u", "--no-password-reset-required"],
                "UpdateLoginProfile",
                json!({"UserName": "u", "PasswordResetRequired": false}),
            ),
            (
                vec!["delete-login-profile", "--user-name", "u"],
                "DeleteLoginProfile",
                json!({"UserName": "u"}),
            ),
            (vec!["get-login-profile", "--user-name", "u"], "GetLoginProfile", json!({"UserName": "u"})),
            (
                vec!["change-password", "--old-password", "a", "--new-password", "b"],
                "ChangePassword",
                json!({"OldPassword": "a", "NewPassword": "b"}),
            ),
            (
                vec!["create-virtual-mfa-device", "--virtual-mfa-device-name", "phone"],
                "CreateVirtualMFADevice",
                json!({"VirtualMFADeviceName": "phone"}),
            ),
            (
                vec![
                    "enable-mfa-device",
                    "--user-name",
                    "u",
                    "--serial-number",
                    arn,
                    "--authentication-code1",
                    "123456",
                    "--authentication-code2",
                    "654321",
                ],
                "EnableMFADevice",
                json!({"UserName": "u", "SerialNumber": arn, "AuthenticationCode1": "123456",
                    "AuthenticationCode2": "654321"}),
            ),
            (
                vec!["deactivate-mfa-device", "--user-name", "u", "--serial-number", arn],
                "DeactivateMFADevice",
                json!({"UserName": "u", "SerialNumber": arn}),
            ),
            (vec!["list-mfa-devices"], "ListMFADevices", json!({})),
            (vec!["list-mfa-devices", "--user-name", "u"], "ListMFADevices", json!({"UserName": "u"})),
            (
                vec!["delete-virtual-mfa-device", "--serial-number", arn],
                "DeleteVirtualMFADevice",
                json!({"SerialNumber": arn}),
            ),
        ] {
            let c = call(&args);
            assert_eq!((c.operation, &c.body), (op, &body), "{args:?}");
            assert_eq!(c.target(), format!("AirlockIAM.{op}"));
        }
    }
}
