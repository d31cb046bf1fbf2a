//! The data plane: splices a client's session stream to the agent's, recording every
//! chunk before it is forwarded.

#![forbid(unsafe_code)]

pub mod splice;
pub mod tcp;

pub use splice::{
    finish_recording, splice, splice_attached, until, Attachment, Deadlines, Limits, Positions,
    SharedRecorder, SpliceOutcome,
};
pub use tcp::{pipe, PipeOutcome, Tap};
