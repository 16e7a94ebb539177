//! `kubectl modelrollout`: follow a ModelRollout live (`status --watch`), list them, steer them
//! (`promote`, `abort`, `pause`, `resume`, `retry`) and lint manifests offline.
//!
//! The pure parts (views, refusal rules, lint) are separate modules tested from fixed resources;
//! `cluster` holds every API call.

pub mod cli;
pub mod cluster;
pub mod lint;
pub mod list;
pub mod request;
pub mod sparkline;
pub mod view;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod snapshot;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::watcher;
use modelrollout_api::{ModelRollout, Phase};
use serde::Serialize;

use crate::cli::{Cli, Command, Output};
use crate::cluster::{Cluster, event_lines};
use crate::request::{Request, phase_of, plan, settled};
use crate::view::{Style, render_status};

/// Everything that makes a command fail (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig or client could not be set up.
    #[error("{0}")]
    Config(String),

    /// The rollout does not exist.
    #[error(
        "modelrollout {name:?} not found in namespace {namespace:?}: check the name, or pass -n NAMESPACE (`kubectl modelrollout list -A` lists them all)"
    )]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where it was looked for.
        namespace: String,
    },

    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What the call was for.
        what: String,
        /// kube's error.
        source: Box<kube::Error>,
    },

    /// The request makes no sense for the rollout as it is.
    #[error(transparent)]
    Refused(#[from] request::Refusal),

    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The watched rollout was deleted.
    #[error("modelrollout {0} was deleted")]
    Deleted(String),

    /// Printing failed (a closed pipe, for example).
    #[error("writing output: {0}")]
    Output(String),
}

impl Error {
    fn api(what: String, source: kube::Error) -> Self {
        Error::Api { what, source: Box::new(source) }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The binary: parse, run, map the outcome to kubectl's exit codes (0 ok, 1 error, 2 usage).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    let connect = || {
        Cluster::connect(
            global.kubeconfig.as_deref(),
            global.context.as_deref(),
            global.namespace.as_deref(),
        )
    };
    match cli.command {
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(
                shell,
                &mut command,
                "kubectl-modelrollout",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Lint { files } => lint(&files),
        Command::List { all_namespaces } => {
            let cluster = connect().await?;
            let rollouts = cluster.list(all_namespaces).await?;
            match global.output {
                Some(format @ (Output::Json | Output::Yaml)) => {
                    print_object(&ListDocument::new(rollouts), format)?
                }
                other => {
                    if rollouts.is_empty() {
                        let place = if all_namespaces {
                            String::new()
                        } else {
                            format!(" in {} namespace", cluster.namespace)
                        };
                        eprintln!("No modelrollouts found{place}.");
                    }
                    let table = list::render_list(
                        &rollouts,
                        Timestamp::now(),
                        all_namespaces,
                        other == Some(Output::Wide),
                    );
                    print(&table)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { name, watch } => {
            let cluster = connect().await?;
            match global.output {
                Some(format @ (Output::Json | Output::Yaml)) => {
                    print_object(&cluster.get(&name).await?, format)?;
                    Ok(ExitCode::SUCCESS)
                }
                _ if watch => watch_status(&cluster, &name).await,
                _ => {
                    let rollout = cluster.get(&name).await?;
                    let events = event_lines(&cluster.events(&name).await?);
                    print(&render_status(&rollout, &events, Timestamp::now(), output_style()))?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Promote { name, full } => {
            steer(&connect().await?, &name, Request::Promote { full }).await
        }
        Command::Abort { name } => steer(&connect().await?, &name, Request::Abort).await,
        Command::Pause { name } => steer(&connect().await?, &name, Request::Pause).await,
        Command::Resume { name } => steer(&connect().await?, &name, Request::Resume).await,
        Command::Retry { name } => steer(&connect().await?, &name, Request::Retry).await,
    }
}

/// A request: read the rollout, refuse or write the change, say what changed.
async fn steer(cluster: &Cluster, name: &str, request: Request) -> Result<ExitCode> {
    let rollout = cluster.get(name).await?;
    let user = cluster.user().await;
    let change = plan(request, &rollout, &user, Timestamp::now())?;
    let updated = cluster.apply(name, &change).await?;
    print(&format!("{}\n", change.describe(&updated)))?;
    Ok(ExitCode::SUCCESS)
}

/// Colour and live times on a terminal (unless `NO_COLOR` is set), plain text otherwise.
fn output_style() -> Style {
    if std::io::stdout().is_terminal() {
        let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Style { colour, relative_times: true }
    } else {
        Style::PLAIN
    }
}

/// `status --watch`: redraw on every change of the rollout or its events (and every second on a
/// terminal, for the countdowns); piped, print a block only when the text changes. Ends when
/// the rollout has settled: 0 for Promoted, 1 for RolledBack or Failed.
async fn watch_status(cluster: &Cluster, name: &str) -> Result<ExitCode> {
    let style = output_style();
    let mut rollout = cluster.get(name).await?;
    let mut rollouts = cluster.watch_rollout(name);
    let mut event_stream = cluster.watch_events(name);
    let mut events = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_block = String::new();
    loop {
        let block = render_status(&rollout, &event_lines(events.values()), Timestamp::now(), style);
        if block != last_block {
            if style.relative_times {
                // Home the cursor and clear the screen: the view redraws in place.
                print(&format!("\x1b[H\x1b[2J{block}"))?;
            } else {
                print(&format!("{block}\n"))?;
            }
            last_block = block;
        }
        if settled(&rollout) {
            let phase = phase_of(&rollout);
            eprintln!("modelrollout {} is {phase}", request::object_name(&rollout));
            return Ok(if phase == Phase::Promoted {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::select! {
            changed = rollouts.next() => match changed {
                Some(Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r))) => rollout = r,
                Some(Ok(watcher::Event::Delete(_))) => return Err(Error::Deleted(name.to_owned())),
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(err)) => eprintln!("warning: watching modelrollout {name}: {err}"),
                None => return Err(Error::Output(format!("the watch on modelrollout {name} ended"))),
            },
            changed = event_stream.next() => match changed {
                Some(Ok(watcher::Event::Apply(e) | watcher::Event::InitApply(e))) => {
                    events.insert(e.uid().unwrap_or_default(), e);
                }
                Some(Ok(watcher::Event::Delete(e))) => {
                    events.remove(&e.uid().unwrap_or_default());
                }
                Some(Ok(watcher::Event::Init)) => events.clear(),
                Some(Ok(watcher::Event::InitDone)) => {}
                Some(Err(err)) => eprintln!("warning: watching events of modelrollout {name}: {err}"),
                None => {}
            },
            _ = ticker.tick(), if style.relative_times => {}
        }
    }
}

/// `lint FILE...`: problems on stdout, a summary on stderr; exit 1 when any problem is found.
fn lint(files: &[std::path::PathBuf]) -> Result<ExitCode> {
    let (mut checked, mut problems) = (0, 0);
    let mut out = String::new();
    for path in files {
        let name = path.display().to_string();
        let text = if name == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|source| Error::Read { path: name.clone(), source })?;
        let report = lint::lint_text(&name, &text);
        checked += report.checked;
        problems += report.problems.len();
        for problem in report.problems {
            out.push_str(&format!("{problem}\n"));
        }
    }
    print(&out)?;
    eprintln!("{checked} ModelRollout(s) in {} file(s): {problems} problem(s)", files.len());
    Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// kubectl's `List` wrapper for `list -o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListDocument {
    api_version: &'static str,
    kind: &'static str,
    items: Vec<ModelRollout>,
}

impl ListDocument {
    fn new(items: Vec<ModelRollout>) -> Self {
        ListDocument { api_version: "v1", kind: "List", items }
    }
}

fn print_object(object: &impl Serialize, format: Output) -> Result<()> {
    let text = match format {
        Output::Yaml => serde_yaml::to_string(object).map_err(|e| Error::Output(e.to_string()))?,
        _ => serde_json::to_string_pretty(object).map_err(|e| Error::Output(e.to_string()))? + "\n",
    };
    print(&text)
}

fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Output(e.to_string()))
}
