//! `postern`: see the `postern_cli::cli` module for the manual.

fn main() {
    std::process::exit(postern_cli::cli::main());
}
