//! The pure decisions of a pod's lifecycle, as kubelet makes them: whether a stopped container
//! restarts, and the pod's phase from its containers.

use super::status::Phase;

/// Whether a container that exited with `exit_code` is started again under the pod's
/// `restartPolicy` (sidecars, init containers with `restartPolicy: Always`, always are).
pub fn should_restart(policy: &str, exit_code: i64) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Where the init containers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitProgress {
    /// Some are still to run (or are running).
    Pending,
    /// Every ordinary one completed and every sidecar started.
    Done,
    /// One failed and will not be retried (`restartPolicy: Never`).
    Failed,
}

/// How the regular containers stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub running: usize,
    /// Not started yet and never ran.
    pub waiting: usize,
    /// Ran and stopped (whether or not it will restart).
    pub stopped: usize,
    /// Of `stopped`, those whose last run exited 0.
    pub succeeded: usize,
}

/// The pod phase (kubelet's `getPhase`).
pub fn phase(policy: &str, init: InitProgress, c: Counts) -> Phase {
    match init {
        InitProgress::Failed => return Phase::Failed,
        InitProgress::Pending => return Phase::Pending,
        InitProgress::Done => {}
    }
    if c.waiting > 0 {
        return Phase::Pending;
    }
    if c.running > 0 {
        return Phase::Running;
    }
    if c.stopped == 0 {
        return Phase::Pending;
    }
    match policy {
        "Never" if c.succeeded == c.stopped => Phase::Succeeded,
        "Never" => Phase::Failed,
        "OnFailure" if c.succeeded == c.stopped => Phase::Succeeded,
        // Restarting containers keep the pod Running.
        _ => Phase::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
    }

    #[test]
    fn phases() {
        let done = InitProgress::Done;
        let c = |running, waiting, stopped, succeeded| Counts {
            running,
            waiting,
            stopped,
            succeeded,
        };
        assert_eq!(
            phase("Always", InitProgress::Pending, c(0, 1, 0, 0)),
            Phase::Pending
        );
        assert_eq!(
            phase("Never", InitProgress::Failed, c(0, 1, 0, 0)),
            Phase::Failed
        );
        assert_eq!(phase("Always", done, c(1, 1, 0, 0)), Phase::Pending);
        assert_eq!(phase("Always", done, c(1, 0, 1, 0)), Phase::Running);
        assert_eq!(phase("Always", done, c(0, 0, 2, 2)), Phase::Running);
        assert_eq!(phase("OnFailure", done, c(0, 0, 2, 2)), Phase::Succeeded);
        assert_eq!(phase("OnFailure", done, c(0, 0, 2, 1)), Phase::Running);
        assert_eq!(phase("Never", done, c(0, 0, 2, 1)), Phase::Failed);
        assert_eq!(phase("Never", done, c(0, 0, 2, 2)), Phase::Succeeded);
    }
}
