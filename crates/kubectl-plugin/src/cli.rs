//! The command line, as kubectl users expect it: global `--kubeconfig`, `--context`,
//! `-n/--namespace`, `-A`, `-o`, and one subcommand per verb.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # Follow a rollout live; exits 0 when it is Promoted, 1 when it is RolledBack or Failed
  kubectl modelrollout status chat-assistant --watch

  # Every rollout in every namespace
  kubectl modelrollout list -A

  # End the current pause now, or give the canary 100% at once
  kubectl modelrollout promote chat-assistant
  kubectl modelrollout promote chat-assistant --full

  # Send all traffic back to stable, then start again from step 1
  kubectl modelrollout abort chat-assistant
  kubectl modelrollout retry chat-assistant

  # Hold the current weight, and continue later
  kubectl modelrollout pause chat-assistant
  kubectl modelrollout resume chat-assistant

  # Check manifests offline before applying them
  kubectl modelrollout lint deploy/examples/*.yaml

  # Shell completion
  source <(kubectl-modelrollout completion bash)

Exit codes: 0 ok, 1 error or refused request, 2 usage error.";

/// Follow and steer ModelRollouts (canary rollouts of model APIs).
#[derive(Debug, Parser)]
#[command(name = "kubectl-modelrollout", bin_name = "kubectl modelrollout", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Cluster connection and output options.
    #[command(flatten)]
    pub global: Global,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, with kubectl's names.
#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace of the rollout (default: the context's namespace, then "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Output>,
}

/// `-o` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The object(s) as JSON.
    Json,
    /// The object(s) as YAML.
    Yaml,
    /// The table with more columns.
    Wide,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a rollout: steps, weight, time left, last analysis, conditions, events, history.
    Status {
        /// The rollout's name.
        name: String,
        /// Keep redrawing on every change; exit 0 when Promoted, 1 when RolledBack or Failed.
        #[arg(short, long)]
        watch: bool,
    },
    /// List rollouts with phase, weight, step, error rates and age.
    #[command(visible_alias = "ls")]
    List {
        /// List rollouts in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Move on by one step now (end a pause or skip the wait for analysis).
    Promote {
        /// The rollout's name.
        name: String,
        /// Skip every remaining step and give the canary 100% now.
        #[arg(long)]
        full: bool,
    },
    /// Send all traffic back to stable now.
    Abort {
        /// The rollout's name.
        name: String,
    },
    /// Hold the current weight (sets spec.paused).
    Pause {
        /// The rollout's name.
        name: String,
    },
    /// Continue a rollout paused with `pause` (clears spec.paused).
    Resume {
        /// The rollout's name.
        name: String,
    },
    /// Start a RolledBack or Failed rollout again from step 1.
    Retry {
        /// The rollout's name.
        name: String,
    },
    /// Check ModelRollout manifests offline with the API server's and the controller's rules.
    Lint {
        /// Manifest files (`-` reads standard input).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks pass.
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// kubectl's flags parse before and after the verb.
    #[test]
    fn kubectl_style_flags() {
        let cli = Cli::parse_from([
            "kubectl-modelrollout",
            "-n",
            "ai",
            "status",
            "x",
            "-w",
            "--context",
            "c",
        ]);
        assert_eq!(cli.global.namespace.as_deref(), Some("ai"));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        assert!(matches!(cli.command, Command::Status { watch: true, .. }));
        let cli = Cli::parse_from(["kubectl-modelrollout", "list", "-A", "-o", "wide"]);
        assert_eq!(cli.global.output, Some(Output::Wide));
        assert!(matches!(cli.command, Command::List { all_namespaces: true }));
    }

    /// Usage errors exit with 2, as kubectl's do.
    #[test]
    fn usage_errors_exit_2() {
        let err = Cli::try_parse_from(["kubectl-modelrollout", "promote"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["kubectl-modelrollout", "list", "-o", "table"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
