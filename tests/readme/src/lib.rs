//! Docs as tests: the fenced shell and Python blocks of the project's Markdown files are run word
//! for word, section by section, the way a reader would type them, and their output is checked
//! against what the page says the reader will see.
//!
//! The markers live in the fence info string, which renders invisibly:
//! - ```` ```sh ````, ```` ```console ```` (`$ ` lines run, the other lines are their output),
//!   ```` ```python ````: run.
//! - ```` ```sh skip="why" ````: not run; the reason is printed in the summary.
//! - ```` ```sh retry ````: a read-only block whose answer may lag behind a change the reader just
//!   made (a reload in flight): rerun until its output matches, within the block's time limit.
//! - ```` ```text output ````: the output of the runnable block before it, matched line by line.
//! - `# prints: TEXT` comments in a block: a line of its output contains `TEXT`, in this order.
//!
//! In expected text `...` stands for any text within a line, and a line that is only `...` for any
//! number of lines.

pub mod expect;
pub mod make_targets;
pub mod markdown;
pub mod ports;
pub mod repo_copy;
pub mod run;
pub mod session;
