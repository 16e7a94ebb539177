//! `modelrollout-sim [--runs N] [--seed S] [--threads T] [--write docs/decisions.md]`: prints
//! the table of issue 9 and, with `--write`, puts it between the markers of that file.

use std::process::ExitCode;
use std::time::Instant;

use modelrollout_sim::experiment::{issue_9, run, standard_rules};
use modelrollout_sim::report::table;

const USAGE: &str = "usage: modelrollout-sim [--runs N] [--seed S] [--threads T] [--write FILE]";
const BEGIN: &str = "<!-- sim:begin -->";
const END: &str = "<!-- sim:end -->";

struct Options {
    runs: u64,
    seed: u64,
    threads: u64,
    write: Option<String>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options { runs: 4000, seed: 9, threads: 2, write: None };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number =
            |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--runs" => options.runs = number(value()?)?.max(1),
            "--seed" => options.seed = number(value()?)?,
            "--threads" => options.threads = number(value()?)?.max(1),
            "--write" => options.write = Some(value()?),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("{problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let experiments = issue_9();
    let rules = standard_rules();
    let outcomes: Vec<_> = experiments
        .iter()
        .enumerate()
        .map(|(i, e)| run(i as u64, e, &rules, options.runs, options.seed, options.threads))
        .collect();
    let names: Vec<String> = rules.iter().map(|r| r.name()).collect();
    let section = format!(
        "{BEGIN}\n`modelrollout-sim --runs {} --seed {}` ({} simulated rollouts per scenario; \
         95 % confidence intervals in parentheses):\n\n{}{END}",
        options.runs,
        options.seed,
        options.runs,
        table(&experiments, &outcomes, &names)
    );
    println!("{section}");
    eprintln!(
        "simulated {} rollouts in {:.1?}",
        options.runs * experiments.len() as u64,
        started.elapsed()
    );
    if let Some(path) = options.write {
        let doc = match std::fs::read_to_string(&path) {
            Ok(doc) => doc,
            Err(e) => {
                eprintln!("cannot read {path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
            eprintln!("{path} has no {BEGIN} … {END} markers: add them where the table belongs");
            return ExitCode::FAILURE;
        };
        let updated = format!("{}{section}{}", &doc[..begin], &doc[end + END.len()..]);
        if let Err(e) = std::fs::write(&path, updated) {
            eprintln!("cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!("wrote the table into {path}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    /// Defaults, every flag, and the problems a user gets told about.
    #[test]
    fn parses_flags() {
        let defaults = parse(args(&[])).unwrap();
        assert_eq!((defaults.runs, defaults.seed, defaults.threads), (4000, 9, 2));
        let set =
            parse(args(&["--runs", "10", "--seed", "3", "--threads", "1", "--write", "x.md"]))
                .unwrap();
        assert_eq!(
            (set.runs, set.seed, set.threads, set.write.as_deref()),
            (10, 3, 1, Some("x.md"))
        );
        assert_eq!(parse(args(&["--runs"])).err().unwrap(), "--runs needs a value");
        assert_eq!(parse(args(&["--seed", "x"])).err().unwrap(), "--seed: \"x\" is not a number");
        assert_eq!(parse(args(&["--fast"])).err().unwrap(), "unknown argument \"--fast\"");
    }
}
