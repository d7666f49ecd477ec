//! What comes out of containers: log frames (filtered to `since` precisely, the API's own
//! `since` having whole seconds) and exec output (bounded to [`EXEC_OUTPUT_LIMIT`]).

use bollard::container::LogOutput;
use bytes::Bytes;

use super::super::EXEC_OUTPUT_LIMIT;

/// How log frames are post-processed.
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameFilter {
    /// Drop frames stamped before this.
    pub since: Option<jiff::Timestamp>,
    /// The engine was asked for timestamps (to filter by `since`) but the caller was not:
    /// strip them.
    pub strip_timestamps: bool,
}

impl FrameFilter {
    /// Whether the engine must prefix every frame with its timestamp.
    pub fn engine_timestamps(&self, caller_wants: bool) -> bool {
        caller_wants || self.since.is_some()
    }

    /// One frame (one line, or a piece of a long one) as the caller gets it, or `None` to drop.
    pub fn apply(&self, frame: Bytes) -> Option<Bytes> {
        if self.since.is_none() && !self.strip_timestamps {
            return Some(frame);
        }
        // `<RFC 3339 nano timestamp> <payload>`
        let Some(space) = frame.iter().position(|&b| b == b' ') else {
            return Some(frame);
        };
        let stamp = std::str::from_utf8(&frame[..space])
            .ok()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok());
        let Some(stamp) = stamp else {
            return Some(frame);
        };
        if self.since.is_some_and(|since| stamp < since) {
            return None;
        }
        if self.strip_timestamps {
            Some(frame.slice(space + 1..))
        } else {
            Some(frame)
        }
    }
}

pub(super) fn frame_bytes(o: LogOutput) -> Bytes {
    match o {
        LogOutput::StdOut { message }
        | LogOutput::StdErr { message }
        | LogOutput::StdIn { message }
        | LogOutput::Console { message } => message,
    }
}

/// An exec's output, each stream kept up to the limit (the rest is read and dropped, so that
/// the process is never blocked on a full pipe).
#[derive(Debug, Default)]
pub(super) struct ExecCollector {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl ExecCollector {
    pub fn push(&mut self, o: LogOutput) {
        let (buf, message) = match o {
            LogOutput::StdErr { message } => (&mut self.stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (&mut self.stdout, message)
            }
            LogOutput::StdIn { .. } => return,
        };
        let room = EXEC_OUTPUT_LIMIT.saturating_sub(buf.len());
        buf.extend_from_slice(&message[..room.min(message.len())]);
    }

    /// Stdout then stderr, at most [`EXEC_OUTPUT_LIMIT`] bytes.
    pub fn into_output(self) -> Vec<u8> {
        let mut out = self.stdout;
        out.extend_from_slice(&self.stderr);
        out.truncate(EXEC_OUTPUT_LIMIT);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_drops_earlier_frames_and_strips_stamps_not_asked_for() {
        let since: jiff::Timestamp = "2024-05-01T10:00:00.5Z".parse().unwrap_or_default();
        let f = FrameFilter {
            since: Some(since),
            strip_timestamps: true,
        };
        assert!(f.engine_timestamps(false));
        assert_eq!(f.apply(Bytes::from("2024-05-01T10:00:00.4Z early\n")), None);
        assert_eq!(
            f.apply(Bytes::from("2024-05-01T10:00:00.500000001Z late\n")),
            Some(Bytes::from("late\n"))
        );
        let keep = FrameFilter {
            since: Some(since),
            strip_timestamps: false,
        };
        assert_eq!(
            keep.apply(Bytes::from("2024-05-01T10:00:01Z x\n")),
            Some(Bytes::from("2024-05-01T10:00:01Z x\n"))
        );
        let none = FrameFilter {
            since: None,
            strip_timestamps: false,
        };
        assert!(!none.engine_timestamps(false));
        assert_eq!(none.apply(Bytes::from("a b")), Some(Bytes::from("a b")));
    }

    #[test]
    fn exec_output_is_stdout_then_stderr_within_the_limit() {
        let mut c = ExecCollector::default();
        c.push(LogOutput::StdErr {
            message: Bytes::from("err\n"),
        });
        c.push(LogOutput::StdOut {
            message: Bytes::from("out\n"),
        });
        assert_eq!(c.into_output(), b"out\nerr\n");

        let mut c = ExecCollector::default();
        for _ in 0..3 {
            c.push(LogOutput::StdOut {
                message: Bytes::from(vec![b'x'; EXEC_OUTPUT_LIMIT / 2 + 1]),
            });
        }
        c.push(LogOutput::StdErr {
            message: Bytes::from("e"),
        });
        assert_eq!(c.into_output(), vec![b'x'; EXEC_OUTPUT_LIMIT]);
    }
}
