//! Commands run in containers: [`DockerRuntime::exec_impl`] for probes and hooks (output
//! collected up to the limit, bounded by a timeout; the engine has no way to kill an exec, so
//! one that times out keeps running in the container), and interactive sessions (output
//! streamed, stdin and terminal size passed through) for `kubectl exec`.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use futures::{StreamExt, TryStreamExt};

use super::DockerRuntime;
use super::errors::{self, Ctx};
use super::io;
use crate::runtime::{ExecChunk, ExecOutput, ExecSession, RtResult, RuntimeError};

impl DockerRuntime {
    pub(super) async fn exec_impl(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> RtResult<ExecOutput> {
        let run = async {
            let (exec_id, started) = self.start_exec_in(id, cmd, false, false).await?;
            let mut collected = io::ExecCollector::default();
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(frame) = output.next().await {
                    collected.push(frame.map_err(|e| self.err(e, Ctx::Container(id)))?);
                }
            }
            // The output can end a moment before the engine records the exit code.
            loop {
                let state = self
                    .docker
                    .inspect_exec(&exec_id)
                    .await
                    .map_err(|e| self.err(e, Ctx::Other))?;
                if state.running != Some(true)
                    && let Some(exit_code) = state.exit_code
                {
                    return Ok(ExecOutput {
                        exit_code,
                        output: collected.into_output(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::Engine(format!(
                "exec {cmd:?} in container {id} timed out after {timeout:?}"
            ))),
        }
    }

    pub(super) async fn exec_start_impl(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> RtResult<ExecSession> {
        let (exec_id, started) = self.start_exec_in(id, cmd, tty, stdin).await?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(RuntimeError::Engine(format!(
                "exec in container {id} started detached"
            )));
        };
        let endpoint = self.endpoint.clone();
        let owned_id = id.to_string();
        let output = output
            .map_err(move |e| errors::map(e, Ctx::Container(&owned_id), &endpoint))
            .try_filter_map(|frame| async move {
                Ok(match frame {
                    LogOutput::StdErr { message } => Some(ExecChunk::Stderr(message)),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        Some(ExecChunk::Stdout(message))
                    }
                    LogOutput::StdIn { .. } => None,
                })
            });
        Ok(ExecSession {
            exec_id,
            output: Box::pin(output),
            input: stdin.then_some(input),
        })
    }

    /// Creates and starts an exec attached to stdout and stderr (and stdin when asked).
    async fn start_exec_in(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> RtResult<(String, StartExecResults)> {
        let options = CreateExecOptions {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            cmd: Some(cmd.to_vec()),
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(id, options)
            .await
            .map_err(|e| self.err(e, Ctx::Container(id)))?;
        let started = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| self.err(e, Ctx::Container(id)))?;
        Ok((exec.id, started))
    }

    pub(super) async fn exec_resize_impl(
        &self,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> RtResult<()> {
        let options = ResizeExecOptions {
            h: i32::try_from(height).unwrap_or(i32::MAX),
            w: i32::try_from(width).unwrap_or(i32::MAX),
        };
        self.docker
            .resize_exec(exec_id, options)
            .await
            .map_err(|e| self.err(e, Ctx::Other))
    }

    pub(super) async fn exec_exit_code_impl(&self, exec_id: &str) -> RtResult<Option<i64>> {
        let state = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| self.err(e, Ctx::Other))?;
        Ok(if state.running == Some(true) {
            None
        } else {
            state.exit_code
        })
    }
}
