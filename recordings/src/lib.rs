//! Session recordings: the asciicast v2 format and the local-folder sink.

pub mod asciicast;
pub mod local;
pub mod recover;
pub mod utf8;

pub use asciicast::{EventCode, Header};
pub use local::{EndReason, Manifest, Recorder, RecordingError, RecordingMeta};
pub use recover::recover_unfinished;
