//! What one run of a real client (pip, npm, yarn, pnpm) did, and the checks a test makes on it.

use std::path::Path;

use anyhow::{Result, bail};

use super::Finished;

/// What one client run did.
pub struct ClientRun {
    pub success: bool,
    pub stdout: String,
    /// The command line and both streams (and, for the node clients, where and how it exited),
    /// for messages.
    pub output: String,
}

impl ClientRun {
    /// What `finished`, a run of `label ARGS` in `dir`, did.
    pub fn of(label: &str, args: &[&str], dir: &Path, finished: &Finished) -> Self {
        Self {
            success: finished.status.success(),
            stdout: finished.stdout.clone(),
            output: format!(
                "$ {label} {} (in {}; {})\n{}",
                args.join(" "),
                dir.display(),
                finished.status,
                finished.output()
            ),
        }
    }

    /// Fails with the client's output unless it succeeded.
    pub fn ensure_success(self, what: &str) -> Result<Self> {
        if !self.success {
            bail!("{what} failed:\n{}", self.output);
        }
        Ok(self)
    }

    /// Fails with the client's output if it succeeded.
    pub fn ensure_failure(self, what: &str) -> Result<Self> {
        if self.success {
            bail!("{what} succeeded but should have failed:\n{}", self.output);
        }
        Ok(self)
    }
}
