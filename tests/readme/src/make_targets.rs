//! The targets `make help` lists, so the README, the Makefile and this test cannot disagree.

/// The target names in `make help` output (lines `  make NAME   what it does`).
pub fn listed(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("make")).then(|| words.next()).flatten().map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `make NAME` line gives one target; other lines are ignored.
    #[test]
    fn targets_from_help() {
        let help = "  make help            list the targets\n  make cluster-up      start a local control plane\nsomething else\n";
        assert_eq!(listed(help), ["help", "cluster-up"]);
    }
}
