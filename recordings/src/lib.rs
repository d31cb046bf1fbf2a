//! Session recordings: the asciicast v2 format, the spool every recording is written to
//! first, the sinks it is shipped to (local folder, S3, CloudWatch Logs), and the escape
//! stripper that turns recorded output into plain text.

#![forbid(unsafe_code)]

pub mod ansi;
pub mod asciicast;
pub mod aws;
mod clock;
pub mod local;
pub mod recover;
pub mod resume;
pub mod sink;
pub mod spool;
/// Test support shared by the crates' end-to-end tests; not used by the broker itself.
#[doc(hidden)]
pub mod testing;
pub mod utf8;

pub use asciicast::{Event, EventCode, Header};
pub use local::{EndReason, Manifest, Recorder, RecordingError, RecordingMeta};
pub use recover::{recover_unfinished, recover_unfinished_except};
pub use resume::{FramePositions, Reopened};
pub use spool::{Progress, Spool, SpoolStatus};
