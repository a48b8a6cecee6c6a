//! What one run of a real client (pip, npm, yarn, pnpm) did, and the checks a test makes on it.

use anyhow::{Result, bail};

/// What one client run did.
pub struct ClientRun {
    pub success: bool,
    pub stdout: String,
    /// The command line and both streams (and, for the node clients, where and how it exited),
    /// for messages.
    pub output: String,
}

impl ClientRun {
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
