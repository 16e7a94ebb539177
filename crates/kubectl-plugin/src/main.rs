//! `kubectl-modelrollout`: kubectl finds it on PATH and runs it as `kubectl modelrollout ...`.

fn main() -> std::process::ExitCode {
    kubectl_modelrollout::main()
}
