//! Session recordings: the asciicast v2 format, the local-folder sink, and the escape
//! stripper that turns recorded output into plain text.

pub mod ansi;
pub mod asciicast;
pub mod local;
pub mod recover;
pub mod utf8;

pub use asciicast::{Event, EventCode, Header};
pub use local::{EndReason, Manifest, Recorder, RecordingError, RecordingMeta};
pub use recover::recover_unfinished;
