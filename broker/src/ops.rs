//! The operation table: every `X-Amz-Target` the API serves, the IAM action each one is
//! authorized as, and the refusal dialect of its service. Handlers name their [`Op`] when they
//! authorize, so an operation can never be checked as another one's action.

/// The service an operation belongs to, which decides its target prefix and its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `AmazonSSM.*`, actions `ssm:*`, refusals `AccessDeniedException`.
    Ssm,
    /// `AirlockIAM.*`, actions `iam:*`, refusals `AccessDenied`.
    Iam,
    /// `AirlockSTS.*`, actions `sts:*`, refusals `AccessDenied`.
    Sts,
    /// `AirlockRecordings.*`, actions `airlock:*`, refusals `AccessDeniedException`.
    Recordings,
}

impl Service {
    /// The `X-Amz-Target` prefix, dot included.
    pub const fn target_prefix(self) -> &'static str {
        match self {
            Service::Ssm => "AmazonSSM.",
            Service::Iam => "AirlockIAM.",
            Service::Sts => "AirlockSTS.",
            Service::Recordings => "AirlockRecordings.",
        }
    }
}

macro_rules! operations {
    ($($service:ident $action_prefix:literal { $($op:ident),* $(,)? })*) => {
        /// One API operation.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($(
                #[doc = concat!("`", $action_prefix, stringify!($op), "`")]
                $op,
            )*)*
        }

        impl Op {
            /// Every operation, in table order.
            pub const ALL: &'static [Op] = &[$($(Op::$op,)*)*];

            /// The operation's name, as in its target.
            pub const fn name(self) -> &'static str {
                match self { $($(Op::$op => stringify!($op),)*)* }
            }

            /// The IAM action the operation is authorized as.
            pub const fn action(self) -> &'static str {
                match self { $($(Op::$op => concat!($action_prefix, stringify!($op)),)*)* }
            }

            /// The service the operation belongs to.
            pub const fn service(self) -> Service {
                match self { $($(Op::$op => Service::$service,)*)* }
            }
        }
    };
}

operations! {
    Ssm "ssm:" {
        CreateActivation, DescribeActivations, DeleteActivation, RegisterManagedInstance,
        DeregisterManagedInstance, DescribeInstanceInformation, GetConnectionStatus,
        StartSession, ResumeSession, TerminateSession, DescribeSessions,
        AddTagsToResource, RemoveTagsFromResource, ListTagsForResource,
        CreateDocument, UpdateDocument, GetDocument, DescribeDocument, DeleteDocument, ListDocuments,
    }
    Iam "iam:" {
        CreateUser, GetUser, DeleteUser, ListUsers, TagUser, UntagUser,
        CreateRole, GetRole, DeleteRole, ListRoles, TagRole, UntagRole, UpdateAssumeRolePolicy,
        CreateAccessKey, ListAccessKeys, UpdateAccessKey, DeleteAccessKey,
        PutUserPolicy, GetUserPolicy, DeleteUserPolicy, ListUserPolicies,
        PutRolePolicy, GetRolePolicy, DeleteRolePolicy, ListRolePolicies,
        CreatePolicy, DeletePolicy, ListPolicies,
        AttachUserPolicy, DetachUserPolicy, ListAttachedUserPolicies,
        AttachRolePolicy, DetachRolePolicy, ListAttachedRolePolicies,
        SimulatePrincipalPolicy, ListAuditEvents, VerifyAuditLog,
        CreateLoginProfile, UpdateLoginProfile, DeleteLoginProfile, GetLoginProfile, ChangePassword,
        CreateVirtualMFADevice, EnableMFADevice, DeactivateMFADevice, ListMFADevices,
        DeleteVirtualMFADevice,
    }
    Sts "sts:" { AssumeRole }
    Recordings "airlock:" { ListRecordings, GetRecording, GetRecordingStatus, SearchRecordings }
    Ssm "ssm:" { SendCommand, ListCommands, ListCommandInvocations, GetCommandInvocation, CancelCommand }
}

impl Op {
    /// The operation an `X-Amz-Target` names.
    pub fn from_target(target: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| {
            target.strip_prefix(op.service().target_prefix()).is_some_and(|name| name == op.name())
        })
    }

    /// Whether each decision on this operation goes into the audit log: session actions and
    /// every change to identities, documents and instances.
    pub const fn audited(self) -> bool {
        use Op::*;
        match self {
            StartSession
            | ResumeSession
            | TerminateSession
            | CreateDocument
            | UpdateDocument
            | DeleteDocument
            | AssumeRole
            | DeregisterManagedInstance
            | SendCommand
            | CancelCommand => true,
            op => matches!(op.service(), Service::Iam) && !op.reads_only(),
        }
    }

    /// Whether the operation only reads.
    pub const fn reads_only(self) -> bool {
        let name = self.name().as_bytes();
        starts_with(name, b"List")
            || starts_with(name, b"Get")
            || starts_with(name, b"Describe")
            || starts_with(name, b"Search")
            || starts_with(name, b"Simulate")
            || starts_with(name, b"Verify")
    }
}

const fn starts_with(name: &[u8], prefix: &[u8]) -> bool {
    if name.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if name[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_unknown_ones_are_none() {
        for op in Op::ALL {
            let target = format!("{}{}", op.service().target_prefix(), op.name());
            assert_eq!(Op::from_target(&target), Some(*op), "{target}");
        }
        assert_eq!(Op::from_target("AmazonSSM.StartSession"), Some(Op::StartSession));
        assert_eq!(Op::from_target("AmazonSSM.PutRolePolicy"), None);
        assert_eq!(Op::from_target("AirlockIAM.StartSession"), None);
        assert_eq!(Op::from_target("AirlockIAM."), None);
        assert_eq!(Op::from_target("StartSession"), None);
    }

    #[test]
    fn actions_and_audit() {
        assert_eq!(Op::PutRolePolicy.action(), "iam:PutRolePolicy");
        assert_eq!(Op::AssumeRole.action(), "sts:AssumeRole");
        assert_eq!(Op::GetRecording.action(), "airlock:GetRecording");
        assert!(Op::PutUserPolicy.audited() && Op::StartSession.audited());
        assert!(!Op::ListUsers.audited() && !Op::DescribeSessions.audited());
        assert!(Op::ListUsers.reads_only() && !Op::DeleteUser.reads_only());
    }
}
